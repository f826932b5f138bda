"""Upstream calls: one shared aiohttp connection pool per base URL, retries, backoff and fallback.

Per route: targets in order (or the first drawn by weight), each tried up to ``1 + retries`` times on
429, 408, 5xx and connection errors, waiting an exponential backoff with jitter or the upstream's
``Retry-After``, whichever is longer; then the next target. 401/403/404/3xx mean the target itself is
unusable (bad key, wrong model or URL): no retry, straight to the next target. Other 4xx are the
client's to see and pass through as they are. A call pinned to one target (``ParsedCall.pinned``: a
stored response's, for the Responses API's follow-ups and ``previous_response_id``) tries that one only,
and its 404 or 405 is about the response, so it passes through too. ``timeout_s`` bounds the whole call, waits included,
until the answer (or a stream's first event) has arrived.

The pools are ``aiohttp.ClientSession`` objects, one per base URL: measured on the bench's fake
upstream, an aiohttp call costs far less CPU than an httpx one (docs/benchmarks.md, "The upstream
client was the floor"; httpcore's pool scans every pooled connection, with a ``poll()`` each, on every
request). Each session
is set up to add nothing of its own: no cookie jar, no redirects, no ``Accept``/``Accept-Encoding``
headers; a request carries our headers and the body bytes only.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import os
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from opentelemetry.trace import Span
from yarl import URL

from gateway import __version__
from gateway.llm import metrics
from gateway.llm.errors import ProxyError, UpstreamError, UpstreamTimeoutError
from gateway.llm.metrics import CallLabels
from gateway.llm.request_body import OPERATION_PATHS, ParsedCall
from gateway.llm.routes_config import API_ANTHROPIC, DEFAULT_ANTHROPIC_VERSION, LlmSettings, Route, Target
from gateway.llm.spans import ProxySpans, end_failed
from gateway.llm.streaming import Opened, SSESplitter
from gateway.telemetry.propagation import trace_headers

logger = logging.getLogger("gateway.llm")

_MAX_ERROR_MESSAGE_CHARS = 300
_MAX_CONNECTIONS = 512  # per base URL
_KEEPALIVE_S = 30.0
_USER_AGENT = f"gateway/{__version__}"
# Statuses that say the target itself is unusable (a failed attempt, then the next target). A call on a stored
# response (a follow-up, previous_response_id) has one target, and its 404 or 405 is about the response: the
# client's to see, as it is.
_UNUSABLE_TARGET = frozenset({401, 403, 404, 405})
_UNUSABLE_KEY = frozenset({401, 403})


@dataclass(slots=True)
class Completed:
    """A whole answer: a success, or a 4xx that the client gets as the upstream sent it."""

    status: int
    body: bytes
    content_type: str
    data: dict[str, Any] | None = None  # a success's body, parsed (a 2xx is always a JSON object)
    answered_at: float = field(default_factory=time.perf_counter)  # when it was read (perf_counter)
    answered_ns: int = field(default_factory=time.time_ns)  # the same moment, as a span timestamp


@dataclass(slots=True)
class Attempt:
    """The attempt that produced the answer; its CLIENT span is still open for the caller to finish."""

    target: Target
    span: Span
    number: int
    started: float  # perf_counter
    outcome: Completed | Opened


class CallProgress:
    """How far a call got (updated per attempt): what the SERVER span reports, failures included."""

    __slots__ = ("attempts", "target")

    def __init__(self) -> None:
        self.attempts = 0
        self.target: Target | None = None


@dataclass(slots=True)
class _Failure:
    kind: str  # "status" | "timeout" | "transport" | "invalid" (a 2xx that is not a usable answer)
    error_type: str
    message: str
    status: int | None = None
    retry_after_s: float | None = None

    @property
    def retryable(self) -> bool:
        """Timeouts, transport errors, 408, 429 and 5xx; not a target that is itself unusable (401, 404, ...)."""
        status = self.status
        return status is None or status in (408, 429) or status >= 500


class Upstreams:
    """The HTTP side of the proxy: clients, per-target headers and URLs, and the retry loop."""

    def __init__(self, settings: LlmSettings, spans: ProxySpans, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._spans = spans
        self._pools: dict[str, aiohttp.ClientSession] = {}
        self._headers: dict[Target, dict[str, str]] = {}
        self._urls: dict[tuple[Target, str], URL] = {}
        self._secrets: dict[Target, str] = {}
        self._timeouts: dict[str, aiohttp.ClientTimeout] = {}
        for route in settings.routes.values():
            # connect: waiting for a pooled connection plus opening one; sock_read: between two reads.
            self._timeouts[route.name] = aiohttp.ClientTimeout(
                total=None,
                connect=route.connect_timeout_s,
                sock_connect=route.connect_timeout_s,
                sock_read=route.read_timeout_s,
            )
            for target in route.targets:
                for path in OPERATION_PATHS:
                    self._urls[(target, path)] = URL(target.base_url + path)
                headers = {"content-type": "application/json", "user-agent": _USER_AGENT}
                key = env.get(target.api_key_env) if target.api_key_env else None
                if target.api == API_ANTHROPIC:  # the Messages API's own headers; the client's key never goes on
                    if key:
                        headers["x-api-key"] = key
                    headers["anthropic-version"] = target.anthropic_version or DEFAULT_ANTHROPIC_VERSION
                elif key:
                    headers["authorization"] = f"Bearer {key}"
                if key:
                    self._secrets[target] = key
                self._headers[target] = headers

    async def start(self) -> None:
        for target in self._headers:
            if target.base_url not in self._pools:
                self._pools[target.base_url] = aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=_MAX_CONNECTIONS, keepalive_timeout=_KEEPALIVE_S),
                    cookie_jar=aiohttp.DummyCookieJar(),  # one session serves every client: keep no cookies
                    skip_auto_headers=("Accept", "Accept-Encoding"),
                    raise_for_status=False,
                )

    async def close(self) -> None:
        pools, self._pools = self._pools, {}
        await asyncio.gather(*(pool.close() for pool in pools.values()), return_exceptions=True)

    def redact(self, target: Target, text: str) -> str:
        secret = self._secrets.get(target)
        return text.replace(secret, "[redacted]") if secret and secret in text else text

    async def dispatch(
        self,
        call: ParsedCall,
        route: Route,
        server_span: Span,
        progress: CallProgress,
        timeout_s: float | None = None,
    ) -> Attempt:
        """Try the route's targets until one answers; UpstreamError (502) or UpstreamTimeoutError (504)
        when none does. ``timeout_s``, when smaller than the route's, is the whole call's budget instead.
        A call pinned to a target (``call.pinned``: a stored response's) tries that one only: no fallback to
        a target that cannot know the response."""
        loop = asyncio.get_running_loop()
        budget_s = route.timeout_s if timeout_s is None or timeout_s >= route.timeout_s else timeout_s
        deadline = loop.time() + budget_s
        failures: list[tuple[Target, _Failure]] = []
        number = 0
        targets = _target_order(route) if call.pinned is None else (call.pinned,)
        for position, target in enumerate(targets):
            if position:
                metrics.record_fallback(route.name)
            for retry in range(route.retries + 1):
                number += 1
                progress.attempts = number
                progress.target = target
                span = self._spans.start_client(server_span, call, target, number, position > 0)
                started = time.perf_counter()
                failure: _Failure
                try:
                    async with asyncio.timeout_at(deadline):
                        outcome = await self._send(call, route, target, span)
                except aiohttp.ServerTimeoutError as exc:  # this attempt's connect or read timeout (a TimeoutError)
                    failure = _Failure("timeout", type(exc).__name__, f"{type(exc).__name__}")
                except aiohttp.ClientError as exc:
                    failure = _Failure("transport", type(exc).__name__, self.redact(target, str(exc)))
                except TimeoutError:  # the route's timeout_s (or the caller's, smaller)
                    message = f"Route {route.name!r} gave no answer within timeout_s={budget_s:g} s"
                    timed_out = _Failure("timeout", "timeout", message)
                    _end_failed_attempt(span, call_labels(call, route, target), started, timed_out, call)
                    raise UpstreamTimeoutError(
                        f"{message} ({number} attempt(s); last target {target.label}).",
                        code="upstream_timeout",
                        error_type="timeout",
                    ) from None
                except asyncio.CancelledError:  # the caller gave up (an in-process caller's task cancelled)
                    cancelled = _Failure("transport", "cancelled", "cancelled")
                    _end_failed_attempt(span, call_labels(call, route, target), started, cancelled, call)
                    raise
                else:
                    if not isinstance(outcome, _Failure):
                        return Attempt(target, span, number, started, outcome)
                    failure = outcome
                _end_failed_attempt(span, call_labels(call, route, target), started, failure, call)
                failures.append((target, failure))
                logger.debug("Upstream %s failed (attempt %d): %s", target.label, number, failure.message)
                if not failure.retryable or retry == route.retries:
                    break
                wait = max(_backoff_s(route, retry), failure.retry_after_s or 0.0)
                if loop.time() + wait >= deadline:
                    break  # the wait would outlast the budget: try the next target now
                metrics.record_retry(route.name)
                await asyncio.sleep(wait)
        raise _final_error(route, failures, number)

    async def _send(self, call: ParsedCall, route: Route, target: Target, span: Span) -> Completed | Opened | _Failure:
        headers = self._headers[target]
        propagation = trace_headers(span)
        if propagation or call.extra_headers:
            headers = {**headers, **(call.extra_headers or {}), **propagation}
        path = call.upstream_path
        url = self._urls.get((target, path))
        if url is None:  # a follow-up's path names its response (and carries the client's query)
            url = URL(target.base_url + path, encoded=True)
        method = call.operation.method
        if method == "POST":
            response = await self._pools[target.base_url].post(
                url,
                data=call.body_for(target.model),
                headers=headers,
                timeout=self._timeouts[route.name],
                allow_redirects=False,
            )
        else:
            response = await self._pools[target.base_url].request(
                method, url, headers=headers, timeout=self._timeouts[route.name], allow_redirects=False
            )
        opened = False
        try:
            status = response.status
            if not 200 <= status < 300:
                # A follow-up or a continued response has one target: its 404 is about the response, not the target.
                unusable = _UNUSABLE_KEY if call.pinned is not None else _UNUSABLE_TARGET
                return self._classify(target, status, await response.read(), response.headers, unusable)
            content_type = response.headers.get("content-type", "application/json")
            if call.stream:
                if not content_type.startswith("text/event-stream"):
                    return _invalid(f"answered a stream request with HTTP {status} and {content_type!r}, not events")
                chunks = response.content.iter_any()
                splitter = SSESplitter()
                async for chunk in chunks:
                    events = splitter.feed(chunk)
                    if events:
                        opened = True
                        return Opened(response, chunks, splitter, events, time.perf_counter())
                return _Failure("transport", "empty_stream", "closed the stream before sending an event")
            body = await response.read()
            data = _json_object(body)
            if data is None:  # an HTML error page from a proxy, a truncated answer: never relayed as a success
                return _invalid(
                    f"answered HTTP {status} with a body that is not a JSON object "
                    f"({content_type or 'no content type'}, {len(body)} bytes)"
                )
            return Completed(status, body, content_type, data)
        finally:
            if not opened:
                response.release()  # back to the pool when read to the end, else the connection is closed

    def _classify(
        self, target: Target, status: int, body: bytes, headers: Mapping[str, str], unusable: frozenset[int]
    ) -> Completed | _Failure:
        if status in (408, 429) or status >= 500 or status in unusable or status < 400:
            message = self.redact(target, error_message(body))
            return _Failure("status", str(status), message, status=status, retry_after_s=_retry_after_s(headers))
        # Any other 4xx is about the request itself: the client sees the upstream's answer as it is.
        return Completed(status, self.redact(target, body.decode("utf-8", "replace")).encode(), _json_type(headers))


def _invalid(message: str) -> _Failure:
    """A 2xx the client cannot use: a failed attempt (retried, then the next target), 502 in the end."""
    return _Failure("invalid", "invalid_response", message)


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def call_labels(call: ParsedCall, route: Route, target: Target) -> CallLabels:
    """The metric labels of one upstream call: operation, provider, upstream model, route."""
    return (call.operation.name, target.provider, target.model, route.name)


def _end_failed_attempt(span: Span, labels: CallLabels, started: float, failure: _Failure, call: ParsedCall) -> None:
    """The CLIENT span and the metrics of an attempt that got no usable answer."""
    end_failed(span, failure.error_type, failure.message)
    if call.operation.inference:
        metrics.record_attempt(labels, time.perf_counter() - started, failure.error_type, None)
    else:
        metrics.record_upstream_error(labels, failure.error_type)


def _json_type(headers: Mapping[str, str]) -> str:
    return str(headers.get("content-type", "application/json"))


def _target_order(route: Route) -> tuple[Target, ...]:
    """Targets in config order; with weights, the first is drawn by weight and the rest follow in order."""
    targets = route.targets
    if len(targets) == 1 or not route.weighted:
        return targets
    candidates = [t for t in targets if t.weight]
    first = random.choices(candidates, weights=[t.weight or 0.0 for t in candidates])[0]
    return (first, *(t for t in targets if t is not first))


def _backoff_s(route: Route, retry: int) -> float:
    """Exponential backoff with equal jitter: half fixed, half random."""
    ceiling: float = min(route.backoff_max_s, route.backoff_initial_s * 2.0**retry)
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def _retry_after_s(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(0.0, float(value) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def error_message(body: bytes) -> str:
    """The upstream's own error message (OpenAI shape when it has one), shortened for our message."""
    text = ""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = body.decode("utf-8", "replace").strip()
    else:
        error = data.get("error") if isinstance(data, dict) else None
        message = error.get("message") if isinstance(error, dict) else None
        if isinstance(message, str):
            text = message
        elif isinstance(error, str):
            text = error
        else:
            text = body.decode("utf-8", "replace").strip()
    if len(text) > _MAX_ERROR_MESSAGE_CHARS:
        text = text[:_MAX_ERROR_MESSAGE_CHARS] + "..."
    return text


def _final_error(route: Route, failures: list[tuple[Target, _Failure]], attempts: int) -> ProxyError:
    target, last = failures[-1]
    tried = len({t for t, _ in failures})
    prefix = f"Route {route.name!r}: {tried} target(s) failed after {attempts} attempt(s); last, {target.label}"
    if last.kind == "timeout":
        return UpstreamTimeoutError(
            f"{prefix} timed out ({last.error_type}).", code="upstream_timeout", error_type=last.error_type
        )
    if last.kind == "invalid":
        return UpstreamError(f"{prefix} {last.message}.", code="upstream_invalid_response", error_type=last.error_type)
    if last.kind == "status":
        detail = f": {last.message}" if last.message else ""
        return UpstreamError(
            f"{prefix} answered HTTP {last.status}{detail}",
            code=f"upstream_{last.status}",
            error_type=last.error_type,
            retry_after_s=last.retry_after_s if last.status == 429 else None,
        )
    return UpstreamError(
        f"{prefix} could not be reached ({last.error_type}: {last.message}).",
        code="upstream_unreachable",
        error_type=last.error_type,
    )
