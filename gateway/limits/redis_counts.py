"""The sliding-minute windows and the spend in Redis: exact across every worker and replica.

One Lua script per check (``ADMIT``), run atomically by Redis on its own clock (``TIME``, so the replicas'
clocks do not matter): trim the key's request and token logs to the last 60 s, refuse when the budget is spent or
the call does not fit (with when it would), else log the call, all in one round trip. A second script
(``SETTLE``) corrects the call's token entry to its real usage and adds its cost to the key's spend when the
answer ends; a third (``REFUND``) gives an admitted call's entries back when another of its limits refused it (a
route's own limits are checked after the key's, under the subject ``route:<name>``). Per key (or route), in one
hash slot (``{id}``, so a Redis Cluster takes them too):

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

import redis.asyncio as aioredis

from gateway.limits.windows import BUDGET, REQUESTS, TOKENS, TOO_LARGE, WINDOW_S, Ticket, Verdict

_WINDOW_MS = int(WINDOW_S * 1000)
_SPEND_KEPT_S = 7 * 24 * 3600  # a period's spend stays this long after its end (then the store is the record)
_REFUSALS = {1: REQUESTS, 2: TOKENS, 3: BUDGET, 4: TOO_LARGE}

# KEYS: req log, token log, token sum, spend. ARGV: rpm, tpm (0: none), tokens reserved, window ms, budget
# (-1: none), call id. Answers {refused (0 admitted, else _REFUSALS), requests used, requests reset ms, tokens
# used, tokens reset ms, retry ms, spent}.
ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rpm, tpm, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local window, budget, id = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local spent = '0'
if budget >= 0 then
  spent = redis.call('GET', KEYS[4]) or '0'
  if tonumber(spent) >= budget then
    return {3, 0, 0, 0, 0, 0, spent}
  end
end
local refused, retry = 0, 0
local used_r, used_t = 0, 0
if rpm > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
  used_r = redis.call('ZCARD', KEYS[1])
  if used_r >= rpm then
    local oldest = redis.call('ZRANGE', KEYS[1], used_r - rpm, used_r - rpm, 'WITHSCORES')
    refused, retry = 1, tonumber(oldest[2]) + window - now
  end
end
if tpm > 0 then
  local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - window)
  if #gone > 0 then
    local freed = 0
    for i = 1, #gone do
      freed = freed + tonumber(string.match(gone[i], ':(%d+)$'))
    end
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
    redis.call('DECRBY', KEYS[3], freed)
  end
  used_t = tonumber(redis.call('GET', KEYS[3]) or '0')
  if refused == 0 and used_t + cost > tpm then
    if cost > tpm then
      refused = 4
    else
      refused = 2
      local need, freed = used_t + cost - tpm, 0
      local entries = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
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
if refused == 0 then
  if rpm > 0 then
    redis.call('ZADD', KEYS[1], now, id)
    redis.call('PEXPIRE', KEYS[1], window)
    used_r = used_r + 1
  end
  if tpm > 0 then
    redis.call('ZADD', KEYS[2], now, id .. ':' .. cost)
    used_t = redis.call('INCRBY', KEYS[3], cost)
    redis.call('PEXPIRE', KEYS[2], window)
    redis.call('PEXPIRE', KEYS[3], window)
  end
end
local reset_r, reset_t = 0, 0
if rpm > 0 then
  local newest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
  if #newest > 0 then reset_r = tonumber(newest[2]) + window - now end
end
if tpm > 0 then
  local newest = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
  if #newest > 0 then reset_t = tonumber(newest[2]) + window - now end
end
return {refused, used_r, reset_r, used_t, reset_t, retry, spent}
"""

# KEYS: token log, token sum, spend. ARGV: the call's entry (<id>:<reserved>, or '' without tpm), the real tokens
# (-1: unknown, keep the reservation), window ms, cost (0: none), seconds to keep the spend.
SETTLE = """
local tokens = tonumber(ARGV[2])
if ARGV[1] ~= '' and tokens >= 0 then
  local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
  local id = string.match(ARGV[1], '^(.*):%d+$')
  if score then
    local reserved = tonumber(string.match(ARGV[1], ':(%d+)$'))
    redis.call('ZREM', KEYS[1], ARGV[1])
    redis.call('ZADD', KEYS[1], score, id .. ':' .. tokens)
    redis.call('INCRBY', KEYS[2], tokens - reserved)
  elseif tokens > 0 then
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    redis.call('ZADD', KEYS[1], now, id .. ':' .. tokens)
    redis.call('INCRBY', KEYS[2], tokens)
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
    redis.call('PEXPIRE', KEYS[2], ARGV[3])
  end
end
if ARGV[4] ~= '0' then
  redis.call('INCRBYFLOAT', KEYS[3], ARGV[4])
  redis.call('EXPIRE', KEYS[3], ARGV[5])
end
return 1
"""

# KEYS: req log, token log, token sum. ARGV: the call id, its token entry (<id>:<reserved>, or '' without tpm).
# Gives back an admitted call's request and tokens (another of its limits refused it).
REFUND = """
redis.call('ZREM', KEYS[1], ARGV[1])
if ARGV[2] ~= '' and redis.call('ZREM', KEYS[2], ARGV[2]) == 1 then
  redis.call('DECRBY', KEYS[3], tonumber(string.match(ARGV[2], ':(%d+)$')))
end
return 1
"""


def _keys(key_id: str) -> tuple[str, str, str]:
    base = f"gw:rl:{{{key_id}}}"
    return f"{base}:req", f"{base}:tok", f"{base}:tok:n"


def spend_key(key_id: str, period_start: int) -> str:
    return f"gw:spend:{{{key_id}}}:{period_start}"


class RedisCounts:
    """The windows and spend of every key in one Redis, shared by every worker and replica."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self._admit = client.register_script(ADMIT)
        self._settle = client.register_script(SETTLE)
        self._refund = client.register_script(REFUND)

    async def admit(self, ticket: Ticket) -> Verdict:
        requests, tokens, total = _keys(ticket.key_id)
        budget = ticket.budget_usd if ticket.budget_usd is not None else -1
        answer = await self._admit(
            keys=[requests, tokens, total, spend_key(ticket.key_id, ticket.period_start)],
            args=[ticket.rpm, ticket.tpm, ticket.reserved, _WINDOW_MS, repr(float(budget)), ticket.call_id],
        )
        refused, used_r, reset_r, used_t, reset_t, retry, spent = answer
        return Verdict(
            _REFUSALS.get(int(refused)),
            int(used_r),
            int(reset_r) / 1000,
            int(used_t),
            int(reset_t) / 1000,
            int(retry) / 1000,
            float(spent),
        )

    async def settle(self, ticket: Ticket, tokens_used: int | None, cost_usd: float | None) -> None:
        _, tokens, total = _keys(ticket.key_id)
        entry = f"{ticket.call_id}:{ticket.reserved}" if ticket.tpm else ""
        cost = f"{cost_usd:.12f}" if cost_usd and ticket.budget_usd is not None else "0"
        if not entry and cost == "0":
            return
        keep_s = max(1, int((ticket.period_end - time.time() * 1000) / 1000)) + _SPEND_KEPT_S
        await self._settle(
            keys=[tokens, total, spend_key(ticket.key_id, ticket.period_start)],
            args=[entry, -1 if tokens_used is None else tokens_used, _WINDOW_MS, cost, keep_s],
        )

    async def refund(self, ticket: Ticket) -> None:
        requests, tokens, total = _keys(ticket.key_id)
        entry = f"{ticket.call_id}:{ticket.reserved}" if ticket.tpm else ""
        await self._refund(keys=[requests, tokens, total], args=[ticket.call_id, entry])

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
