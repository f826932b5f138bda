"""KeyLimiter: a gateway key's requests and tokens per minute and its budget, and an LLM route's own requests and
tokens per minute (``rpm``/``tpm`` in its config, every caller together), checked before a /v1 call goes upstream
and settled when its answer ends. The LLM proxy's one hook (gateway/llm/proxy.py: ``admit``; its
CallRecord calls ``Admission.settle``).

Per call of a key with limits: ``admit`` reserves one request and the call's tokens (``max_completion_tokens`` or
``max_tokens``, times ``n``; else ``limits.reserve_tokens``) and checks the budget, in one step (one Lua script
with Redis, gateway/limits/redis_counts.py; this process's windows without, gateway/limits/windows.py). Refused:
429 in OpenAI's shape with Retry-After (``rate_limit_exceeded``, type ``requests`` or ``tokens``; or
``insufficient_quota`` naming the budget and when it resets). Admitted: the answer carries OpenAI's
``x-ratelimit-limit-requests``, ``x-ratelimit-remaining-requests``, ``x-ratelimit-reset-requests`` and the
``-tokens`` variants (for the limits the key has), and when it ends its reservation is corrected to the real usage
(input and output tokens; kept when a stream reported none; given back when no answer came) and its cost is added
to the key's spend.

A call of a limited key on a limited route is checked against the key first, then the route, in one step (one
script with Redis): a call the key's limits refuse takes nothing of the route's, and one the route refuses takes
nothing of the key's (a refused call counts in no window). The headers then show, per family (requests, tokens),
the tighter of the two. With Redis, a call's settlement is one script too, written when the call ends, with no
answer asked for.

Redis unreachable (or slower than ``limits.redis_timeout_s``): ``limits.redis_failure`` decides, ``open`` (the
call goes through unlimited, counted in ``gateway_rate_limit_redis_failures_total`` and logged once per outage) or
``closed`` (503); Redis is then left alone for a second before the next try.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import redis
import redis.asyncio as aioredis
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from gateway import metrics
from gateway.errors import DependencyError, GatewayError, QuotaExceeded, RateLimited
from gateway.keys import GatewayKey
from gateway.limit_settings import LimitsSettings
from gateway.limits.budget import STORE_LAG_MS, iso, period_bounds
from gateway.limits.redis_counts import RedisCounts
from gateway.limits.windows import BUDGET, REQUESTS, TOO_LARGE, LocalCounts, Ticket, Verdict
from gateway.llm.routes_config import Route

logger = logging.getLogger("gateway.limits")

REFUSED = metrics.counter(
    "gateway_rate_limited_total",
    "/v1 calls refused by a key's limits, by reason: requests, tokens, budget.",
    ("reason",),
)
REDIS_FAILURES = metrics.counter(
    "gateway_rate_limit_redis_failures_total",
    "Limit checks Redis could not answer, by outcome: allowed (limits.redis_failure: open) or refused (closed).",
    ("outcome",),
)
_REDIS_PAUSE_S = 1.0  # after a Redis failure, this long without trying
ROUTE_SUBJECT = "route:"  # a route's own limits are counted under "route:<name>" (a key's under its id)


def _admit_local(counts: LocalCounts, tickets: list[Ticket]) -> list[Verdict]:
    """Like RedisCounts.admit, in this process: the tickets in order until one refuses, whose call then gives back
    what the earlier ones reserved (a refused call counts in no window)."""
    verdicts: list[Verdict] = []
    for ticket in tickets:
        verdict = counts.admit(ticket)
        verdicts.append(verdict)
        if verdict.refused is not None:
            for earlier in tickets[: len(verdicts) - 1]:
                counts.refund(earlier)
            break
    return verdicts


class Usage(Protocol):
    """What a call's settlement reads of its answer (gateway/llm/answer.py's AnswerSummary)."""

    @property
    def input_tokens(self) -> int | None: ...

    @property
    def output_tokens(self) -> int | None: ...


class Admission:
    """An admitted call of a limited key or route: its rate-limit headers, and its settlement when its answer
    ends (one ticket per limit checked: the key's, the route's)."""

    __slots__ = ("_limiter", "headers", "tickets")

    def __init__(self, limiter: KeyLimiter | None, tickets: list[Ticket], headers: dict[str, str]) -> None:
        self._limiter = limiter  # None: nothing to settle (Redis failed open)
        self.tickets = tickets
        self.headers = headers

    def settle(self, usage: Usage | None, cost_usd: float | None) -> None:
        """Called once when the call ends (CallRecord): ``usage`` of its answer (None: no answer came, the
        reservation is given back; an answer without usage keeps it) and its cost."""
        if self._limiter is None:
            return
        if usage is None:
            tokens: int | None = 0
        elif usage.input_tokens is None and usage.output_tokens is None:
            tokens = None
        else:
            tokens = (usage.input_tokens or 0) + (usage.output_tokens or 0)
        self._limiter.settle(self.tickets, tokens, cost_usd)

    def add_headers(self, error: GatewayError) -> None:
        """The rate-limit headers on an error answered after the call was admitted (an upstream failure)."""
        if self.headers:
            error.headers = {**self.headers, **(error.headers or {})}

    def with_headers(self, response: Response) -> Response:
        return _WithHeaders(response, self.headers) if self.headers else response


class KeyLimiter:
    """One per worker: the counts (Redis when ``redis_url`` is set, else this process's) and the failure policy."""

    def __init__(self, settings: LimitsSettings, redis_url: str | None = None) -> None:
        self.settings = settings
        self.local = LocalCounts()
        self._client: aioredis.Redis | None = None
        if redis_url:
            timeout = settings.redis_timeout_s
            self._client = aioredis.Redis.from_url(redis_url, socket_timeout=timeout, socket_connect_timeout=timeout)
            self.redis: RedisCounts | None = RedisCounts(self._client, timeout)
        else:
            self.redis = None
        self._paused_until = 0.0
        self._failing = False
        self._settling: set[asyncio.Future[Any]] = set()  # settlements waiting for the link to open
        # Call ids, unique across workers and replicas (Redis logs them): a random prefix and a counter.
        self._call_prefix = secrets.token_hex(6)
        self._calls = 0
        self._periods: dict[str, tuple[int, int]] = {}  # budget period -> the current one's (start, end)

    def _period(self, period: str, now_ms: float) -> tuple[int, int]:
        bounds = self._periods.get(period)
        if bounds is None or not bounds[0] <= now_ms < bounds[1]:
            bounds = self._periods[period] = period_bounds(period, now_ms)
        return bounds

    async def close(self) -> None:
        if self._settling:
            await asyncio.wait(self._settling, timeout=self.settings.redis_timeout_s)
        if self.redis is not None:
            await self.redis.close()
        if self._client is not None:
            await self._client.aclose()

    def reservation(self, data: Mapping[str, Any]) -> int:
        """The tokens a call reserves: its output bound (times ``n``), else ``limits.reserve_tokens``."""
        bound = data.get("max_completion_tokens", data.get("max_tokens"))
        if isinstance(bound, int) and not isinstance(bound, bool) and bound > 0:
            choices = data.get("n")
            count = choices if isinstance(choices, int) and not isinstance(choices, bool) and choices > 1 else 1
            return bound * count
        return self.settings.reserve_tokens

    async def admit(self, key: GatewayKey | None, route: Route | None, data: Mapping[str, Any]) -> Admission:
        """Admit a call of ``key`` (None: no key, or one without limits) on ``route`` (None: or one without
        limits of its own), its parsed body ``data``, or raise RateLimited / QuotaExceeded (429), or
        DependencyError (503) when Redis cannot answer and ``limits.redis_failure`` is closed."""
        now_ms = time.time() * 1000
        self._calls += 1
        call_id = f"{self._call_prefix}{self._calls:x}"
        tickets: list[Ticket] = []
        if key is not None and key.limited:
            start, end = self._period(key.budget_period, now_ms) if key.budget_usd is not None else (0, 0)
            tickets.append(Ticket(
                key.id, call_id, key.rpm or 0, key.tpm or 0, self.reservation(data) if key.tpm else 0,
                key.budget_usd, start, end, int(now_ms),
            ))  # fmt: skip
        if route is not None and route.limited:
            tickets.append(Ticket(
                ROUTE_SUBJECT + route.name, call_id, route.rpm or 0, route.tpm or 0,
                self.reservation(data) if route.tpm else 0, None, 0, 0, int(now_ms),
            ))  # fmt: skip
        if self.redis is None:
            verdicts = _admit_local(self.local, tickets)
        elif time.monotonic() < self._paused_until:
            return self._redis_unavailable(tickets, None)
        else:
            try:
                verdicts = await self.redis.admit(tickets)
            except (TimeoutError, redis.RedisError, OSError) as exc:
                return self._redis_unavailable(tickets, exc)
        headers = _headers(tickets[0], verdicts[0])
        for ticket, verdict in zip(tickets[1:], verdicts[1:], strict=False):
            _tighter(headers, _headers(ticket, verdict))
        verdict = verdicts[-1]
        if verdict.refused is not None:
            REFUSED.inc(("tokens" if verdict.refused == TOO_LARGE else verdict.refused,))
            raise _refusal(key, tickets[len(verdicts) - 1], verdict, headers)
        if self._failing:
            self._failing = False
            logger.info("Redis answers the rate-limit checks again")
        return Admission(self, tickets, headers)

    def settle(self, tickets: list[Ticket], tokens_used: int | None, cost_usd: float | None) -> None:
        """Correct the call's reservations and add its cost. With Redis, one script written at once (before any
        later call of this worker is checked) with no answer asked for (gateway/limits/redis_link.py); on a closed
        link, in a task that opens it, whose failure is noted."""
        if self.redis is None:
            for ticket in tickets:
                self.local.settle(ticket, tokens_used, cost_usd)
            return
        try:
            sent = self.redis.settle(tickets, tokens_used, cost_usd)
        except (redis.RedisError, OSError) as exc:
            self._note_failure(exc)
            return
        if sent is not None:
            self._settling.add(sent)
            sent.add_done_callback(self._settled)

    def _settled(self, sent: asyncio.Future[Any]) -> None:
        self._settling.discard(sent)
        exc = None if sent.cancelled() else sent.exception()
        if isinstance(exc, TimeoutError | redis.RedisError | OSError):
            self._note_failure(exc)
        elif exc is not None:
            logger.error("Could not settle a limited call in Redis", exc_info=exc)

    def _redis_unavailable(self, tickets: list[Ticket], exc: BaseException | None) -> Admission:
        if exc is not None:
            self._note_failure(exc)
        if self.settings.redis_failure == "closed":
            REDIS_FAILURES.inc(("refused",))
            raise DependencyError(
                "The rate limits of gateway keys cannot be checked: Redis is unreachable (limits.redis_failure: "
                "closed); retry later."
            )
        REDIS_FAILURES.inc(("allowed",))
        return Admission(None, tickets, {})

    def _note_failure(self, exc: BaseException) -> None:
        self._paused_until = time.monotonic() + _REDIS_PAUSE_S
        if not self._failing:
            self._failing = True
            logger.warning(
                "Redis is unreachable for the rate limits of gateway keys (%s: %s); limits.redis_failure is %s: %s",
                type(exc).__name__, exc, self.settings.redis_failure,
                "calls go through unlimited (counted in gateway_rate_limit_redis_failures_total)"
                if self.settings.redis_failure == "open" else "calls get 503",
            )  # fmt: skip

    async def sync_spend(self, keys: Iterable[GatewayKey], recorded: Any) -> None:
        """Bring the budgeted ``keys``' spend up to the store's record: ``recorded(since_by_key, until_ms)``
        answers the store's sums. Without Redis, this worker's view (see gateway/limits/budget.py); with Redis,
        only the keys whose period spend Redis lost (or never had) are set, if still absent."""
        now_ms = time.time() * 1000
        periods = {key.id: period_bounds(key.budget_period, now_ms) for key in keys}
        if not periods:
            return
        if self.redis is None:
            cutoff = int(now_ms) - STORE_LAG_MS
            sums = await asyncio.to_thread(recorded, {k: start for k, (start, _) in periods.items()}, cutoff)
            for key_id, (start, _) in periods.items():
                self.local.spend.record(key_id, start, sums.get(key_id, 0.0), max(start, cutoff))
            return
        try:
            missing = await self.redis.missing_spend({k: start for k, (start, _) in periods.items()})
            if missing:
                sums = await asyncio.to_thread(recorded, {k: periods[k][0] for k in missing}, None)
                await self.redis.seed_spend(
                    {(k, periods[k][0]): sums.get(k, 0.0) for k in missing}, {k: periods[k][1] for k in missing}
                )
        except (TimeoutError, redis.RedisError, OSError) as exc:
            self._note_failure(exc)


def _headers(ticket: Ticket, verdict: Verdict) -> dict[str, str]:
    """OpenAI's rate-limit headers for the limits the ticket's subject (a key, a route) has."""
    headers: dict[str, str] = {}
    if ticket.rpm:
        headers["x-ratelimit-limit-requests"] = str(ticket.rpm)
        headers["x-ratelimit-remaining-requests"] = str(max(0, ticket.rpm - verdict.requests_used))
        headers["x-ratelimit-reset-requests"] = duration(verdict.requests_reset_s)
    if ticket.tpm:
        headers["x-ratelimit-limit-tokens"] = str(ticket.tpm)
        headers["x-ratelimit-remaining-tokens"] = str(max(0, ticket.tpm - verdict.tokens_used))
        headers["x-ratelimit-reset-tokens"] = duration(verdict.tokens_reset_s)
    return headers


def _tighter(headers: dict[str, str], more: Mapping[str, str]) -> None:
    """Add ``more``'s headers to ``headers``, per family (requests, tokens) the one with less remaining."""
    for family in ("requests", "tokens"):
        remaining = f"x-ratelimit-remaining-{family}"
        if remaining in more and (remaining not in headers or int(more[remaining]) < int(headers[remaining])):
            for name in (f"x-ratelimit-limit-{family}", remaining, f"x-ratelimit-reset-{family}"):
                headers[name] = more[name]


def duration(seconds: float) -> str:
    """A duration as OpenAI writes it in its rate-limit headers: ``20ms``, ``1.5s``, ``6m0s``."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    if seconds < 60:
        return f"{math.ceil(seconds * 1000) / 1000:g}s"
    minutes, rest = divmod(math.ceil(seconds), 60)
    return f"{minutes}m{rest}s"


def _label(key: GatewayKey | None, ticket: Ticket) -> str:
    """How a refusal names whose limit it is (built only then: a key's label is formatted)."""
    if ticket.key_id.startswith(ROUTE_SUBJECT):
        return f"the route {ticket.key_id.removeprefix(ROUTE_SUBJECT)!r}"
    return f"the key {key.label}" if key is not None else "the key"


def _refusal(key: GatewayKey | None, ticket: Ticket, verdict: Verdict, headers: dict[str, str]) -> GatewayError:
    retry_s = max(verdict.retry_after_s, 0.001)
    label = _label(key, ticket)
    if verdict.refused == BUDGET:
        assert key is not None and key.budget_usd is not None
        return QuotaExceeded(
            f"The key {key.label} has spent ${verdict.spent_usd:.6f} of its budget of ${key.budget_usd:g} per "
            f"{key.budget_period} (UTC); the budget resets at {iso(ticket.period_end)}.",
            retry_after_s=max(1.0, (ticket.period_end - time.time() * 1000) / 1000),
            headers=headers,
        )
    if verdict.refused == TOO_LARGE:
        return RateLimited(
            f"Request too large for {label}: it reserves {ticket.reserved} tokens (its max_tokens, or "
            f"limits.reserve_tokens) and the limit is {ticket.tpm} tokens per minute; lower max_tokens.",
            limit_type="tokens",
            retry_after_s=60.0,
            headers=headers,
        )
    if verdict.refused == REQUESTS:
        used, limit, what = verdict.requests_used, ticket.rpm, "requests per min (RPM)"
        requested = 1
    else:
        used, limit, what = verdict.tokens_used, ticket.tpm, "tokens per min (TPM)"
        requested = ticket.reserved
    return RateLimited(
        f"Rate limit reached for {label} on {what}: Limit {limit}, Used {used}, Requested {requested}. "
        f"Please try again in {duration(retry_s)}.",
        limit_type="requests" if verdict.refused == REQUESTS else "tokens",
        retry_after_s=math.ceil(retry_s),
        headers=headers,
    )


class _WithHeaders(Response):
    """Any response (a relayed answer, a stream) with the rate-limit headers added to its start."""

    def __init__(self, inner: Response, headers: Mapping[str, str]) -> None:
        self._inner = inner
        self._extra = [(name.encode(), value.encode()) for name, value in headers.items()]
        self.status_code = inner.status_code
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        extra = self._extra

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        await self._inner(scope, receive, send_with_headers)
