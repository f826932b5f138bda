"""The sliding-minute windows and the spend in Redis: exact across every worker and replica.

One Lua script per call's check (``ADMIT``), run atomically by Redis on its own clock (``TIME``, so the replicas'
clocks do not matter), over every subject the call is limited by (its key's id, then ``route:<name>`` for a
route's own limits): trim each one's request and token logs to the last 60 s, refuse when a budget is spent or the
call does not fit (with when it would), else log the call under every subject, all in one round trip; a refused
call is logged nowhere. A second script (``SETTLE``) corrects the call's token entries to its real usage and adds
its cost to the key's spend when the answer ends. Both go over the limiter's own pipelined connection
(gateway/limits/redis_link.py). Per key (or route), in one hash slot (``{id}``); a call limited by its key and its
route touches two slots in one script, which a single Redis (what ``redis_url`` names) runs as one step and a
Redis Cluster would refuse:

- ``gw:rl:{id}:req``, a sorted set of call ids scored by admission time (ms);
- ``gw:rl:{id}:tok``, a sorted set of ``<call id>:<tokens>`` scored the same, and ``gw:rl:{id}:tok:n``, their sum;
- ``gw:spend:{id}:<period start>``, the spend of the budget period (a float), kept a week past the period.

Why not the ``limits`` package (PyPI): it is not a dependency of the gateway, and it does not fit: its
moving window logs one entry per unit of cost (a 200,000-token minute would be 200,000 list items), it cannot
give tokens back (a reservation corrected to the real usage), and a hit and its window stats (remaining, reset)
are two round trips, where this is one script per check.
"""

from __future__ import annotations

import time
from asyncio import Future
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis

from gateway.limits.redis_link import Script, ScriptLink
from gateway.limits.windows import BUDGET, REQUESTS, TOKENS, TOO_LARGE, WINDOW_S, Ticket, Verdict

_WINDOW_MS = int(WINDOW_S * 1000)
_SPEND_KEPT_S = 7 * 24 * 3600  # a period's spend stays this long after its end (then the store is the record)
_REFUSALS = {1: REQUESTS, 2: TOKENS, 3: BUDGET, 4: TOO_LARGE}

# The limits of one call, every subject's (the key's, then the route's) in one atomic step. KEYS, 4 per subject: req
# log, token log, token sum, spend. ARGV: window ms, call id, then 4 per subject: rpm, tpm (0: none), tokens
# reserved, budget (-1: none). Checks the subjects in order; the first that refuses ends it with nothing written
# (so a refused call counts in no window). Answers 7 values per subject checked: refused (0 admitted, else
# _REFUSALS), requests used, requests reset ms, tokens used, tokens reset ms, retry ms, spent; the counts are
# after the call when it is admitted, and as they stand when it is refused.
ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window, id = tonumber(ARGV[1]), ARGV[2]
local subjects = #KEYS / 4
local checked = {}
local function reset(key)
  local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if #newest > 0 then return tonumber(newest[2]) + window - now end
  return 0
end
local function answer(upto, last, admitted)
  local out = {}
  for i = 1, upto do
    local c = checked[i]
    local r_reset, t_reset = 0, 0
    if admitted then  -- the newest entry is this call's: the window is empty a window from now
      if c.rpm > 0 then r_reset = window end
      if c.tpm > 0 then t_reset = window end
    else
      if c.rpm > 0 then r_reset = reset(KEYS[c.k + 1]) end
      if c.tpm > 0 then t_reset = reset(KEYS[c.k + 2]) end
    end
    for _, v in ipairs({c.refused, c.used_r, r_reset, c.used_t, t_reset, c.retry, c.spent}) do out[#out + 1] = v end
  end
  if last then
    for _, v in ipairs(last) do out[#out + 1] = v end
  end
  return out
end
for s = 1, subjects do
  local k, a = (s - 1) * 4, 2 + (s - 1) * 4
  local rpm, tpm = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local cost, budget = tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
  local spent = '0'
  if budget >= 0 then
    spent = redis.call('GET', KEYS[k + 4]) or '0'
    if tonumber(spent) >= budget then
      return answer(s - 1, {3, 0, 0, 0, 0, 0, spent})
    end
  end
  local refused, retry = 0, 0
  local used_r, used_t = 0, 0
  if rpm > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[k + 1], '-inf', now - window)
    used_r = redis.call('ZCARD', KEYS[k + 1])
    if used_r >= rpm then
      local oldest = redis.call('ZRANGE', KEYS[k + 1], used_r - rpm, used_r - rpm, 'WITHSCORES')
      refused, retry = 1, tonumber(oldest[2]) + window - now
    end
  end
  if tpm > 0 then
    local gone = redis.call('ZRANGEBYSCORE', KEYS[k + 2], '-inf', now - window)
    if #gone > 0 then
      local freed = 0
      for i = 1, #gone do
        freed = freed + tonumber(string.match(gone[i], ':(%d+)$'))
      end
      redis.call('ZREMRANGEBYSCORE', KEYS[k + 2], '-inf', now - window)
      redis.call('DECRBY', KEYS[k + 3], freed)
    end
    used_t = tonumber(redis.call('GET', KEYS[k + 3]) or '0')
    if refused == 0 and used_t + cost > tpm then
      if cost > tpm then
        refused = 4
      else
        refused = 2
        local need, freed = used_t + cost - tpm, 0
        local entries = redis.call('ZRANGE', KEYS[k + 2], 0, -1, 'WITHSCORES')
        for i = 1, #entries, 2 do
          freed = freed + tonumber(string.match(entries[i], ':(%d+)$'))
          if freed >= need then
            retry = tonumber(entries[i + 1]) + window - now
            break
          end
        end
      end
    end
  end
  checked[s] = {k = k, rpm = rpm, tpm = tpm, cost = cost, refused = refused, retry = retry,
                used_r = used_r, used_t = used_t, spent = spent}
  if refused ~= 0 then
    return answer(s)
  end
end
for s = 1, subjects do
  local c = checked[s]
  if c.rpm > 0 then
    redis.call('ZADD', KEYS[c.k + 1], now, id)
    redis.call('PEXPIRE', KEYS[c.k + 1], window)
    c.used_r = c.used_r + 1
  end
  if c.tpm > 0 then
    redis.call('ZADD', KEYS[c.k + 2], now, id .. ':' .. c.cost)
    c.used_t = redis.call('INCRBY', KEYS[c.k + 3], c.cost)
    redis.call('PEXPIRE', KEYS[c.k + 2], window)
    redis.call('PEXPIRE', KEYS[c.k + 3], window)
  end
end
return answer(subjects, nil, true)
"""

# A call's end, every subject's in one step. KEYS, 3 per subject: token log, token sum, spend. ARGV: the real
# tokens (-1: unknown, keep the reservations), window ms, then 3 per subject: the call's token entry
# (<id>:<reserved>, or '' without tpm), cost (0: none), seconds to keep the spend.
SETTLE = """
local tokens, window = tonumber(ARGV[1]), ARGV[2]
for s = 1, #KEYS / 3 do
  local k, a = (s - 1) * 3, 2 + (s - 1) * 3
  local entry = ARGV[a + 1]
  if entry ~= '' and tokens >= 0 then
    local score = redis.call('ZSCORE', KEYS[k + 1], entry)
    local id = string.match(entry, '^(.*):%d+$')
    if score then
      local reserved = tonumber(string.match(entry, ':(%d+)$'))
      redis.call('ZREM', KEYS[k + 1], entry)
      redis.call('ZADD', KEYS[k + 1], score, id .. ':' .. tokens)
      redis.call('INCRBY', KEYS[k + 2], tokens - reserved)
    elseif tokens > 0 then
      local t = redis.call('TIME')
      local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
      redis.call('ZADD', KEYS[k + 1], now, id .. ':' .. tokens)
      redis.call('INCRBY', KEYS[k + 2], tokens)
      redis.call('PEXPIRE', KEYS[k + 1], window)
      redis.call('PEXPIRE', KEYS[k + 2], window)
    end
  end
  if ARGV[a + 2] ~= '0' then
    redis.call('INCRBYFLOAT', KEYS[k + 3], ARGV[a + 2])
    redis.call('EXPIRE', KEYS[k + 3], ARGV[a + 3])
  end
end
return 1
"""


def _keys(key_id: str) -> tuple[str, str, str]:
    base = f"gw:rl:{{{key_id}}}"
    return f"{base}:req", f"{base}:tok", f"{base}:tok:n"


def spend_key(key_id: str, period_start: int) -> str:
    return f"gw:spend:{{{key_id}}}:{period_start}"


class RedisCounts:
    """The windows and spend of every key and route in one Redis, shared by every worker and replica: a call's
    check and its settlement are one script each (``run`` / ``send`` on the link, gateway/limits/redis_link.py);
    the spend's seeding goes through redis-py's client."""

    def __init__(self, client: aioredis.Redis, timeout_s: float) -> None:
        self.client = client
        self._admit = Script(ADMIT)
        self._settle = Script(SETTLE)
        self.link = ScriptLink(client, timeout_s, (self._admit, self._settle))

    async def admit(self, tickets: Sequence[Ticket]) -> list[Verdict]:
        """The verdict of each ticket checked, in order: all admitted, or the last one refused (and nothing of the
        call counted anywhere)."""
        keys: list[str] = []
        args: list[str | int] = [_WINDOW_MS, tickets[0].call_id]
        for ticket in tickets:
            keys += (*_keys(ticket.key_id), spend_key(ticket.key_id, ticket.period_start))
            budget = repr(float(ticket.budget_usd)) if ticket.budget_usd is not None else "-1"
            args += (ticket.rpm, ticket.tpm, ticket.reserved, budget)
        answer = await self.link.run(self._admit, keys, args)
        return [
            Verdict(
                _REFUSALS.get(int(answer[i])),
                int(answer[i + 1]),
                int(answer[i + 2]) / 1000,
                int(answer[i + 3]),
                int(answer[i + 4]) / 1000,
                int(answer[i + 5]) / 1000,
                float(answer[i + 6]),
            )
            for i in range(0, len(answer), 7)
        ]

    def settle(self, tickets: Sequence[Ticket], tokens_used: int | None, cost_usd: float | None) -> Future[Any] | None:
        """Correct the call's reservations to ``tokens_used`` and add its cost: sent at once, not waited for (the
        future answers; None: nothing to send)."""
        keys: list[str] = []
        args: list[str | int] = [-1 if tokens_used is None else tokens_used, _WINDOW_MS]
        for ticket in tickets:
            entry = f"{ticket.call_id}:{ticket.reserved}" if ticket.tpm else ""
            cost = f"{cost_usd:.12f}" if cost_usd and ticket.budget_usd is not None else "0"
            if not entry and cost == "0":
                continue
            keep_s = max(1, int((ticket.period_end - time.time() * 1000) / 1000)) + _SPEND_KEPT_S if cost != "0" else 0
            _, tokens, total = _keys(ticket.key_id)
            keys += (tokens, total, spend_key(ticket.key_id, ticket.period_start))
            args += (entry, cost, keep_s)
        if not keys:
            return None
        return self.link.send(self._settle, keys, args)

    async def close(self) -> None:
        await self.link.close()

    async def seed_spend(self, recorded: dict[tuple[str, int], float], period_ends: dict[str, int]) -> None:
        """Set each key's period spend from the store's record where Redis has none (a Redis that lost its data)."""
        async with self.client.pipeline(transaction=False) as pipe:
            for (key_id, start), spent in recorded.items():
                keep_s = max(1, int((period_ends[key_id] - time.time() * 1000) / 1000)) + _SPEND_KEPT_S
                pipe.set(spend_key(key_id, start), f"{spent:.12f}", nx=True, ex=keep_s)
            await pipe.execute()

    async def missing_spend(self, periods: dict[str, int]) -> list[str]:
        """The keys (of ``periods``: key id -> period start) whose period spend Redis does not hold."""
        ids = list(periods)
        async with self.client.pipeline(transaction=False) as pipe:
            for key_id in ids:
                pipe.exists(spend_key(key_id, periods[key_id]))
            found = await pipe.execute()
        return [key_id for key_id, exists in zip(ids, found, strict=True) if not exists]
