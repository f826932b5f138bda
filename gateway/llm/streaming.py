"""SSE pass-through: every upstream event goes to the client as soon as it is complete.

Nothing is buffered beyond an incomplete event. ``StreamState`` reads each event on the side (usage,
finish reasons, id, model, and the assembled output when content capture is on) for the spans.
A client that disconnects cancels the pump, which closes the upstream connection; an upstream that
fails after the first byte reached the client ends the stream with one SSE error event.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway.errors import GatewayError
from gateway.llm.answer import AnswerSummary
from gateway.llm.errors import ProxyError, UpstreamError, UpstreamTimeoutError, sse_error_event
from gateway.telemetry import semconv as sc

logger = logging.getLogger("gateway.llm")

_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # tells nginx-like proxies in front of us not to buffer either
]


class SSESplitter:
    """Cuts a byte stream at event boundaries (a blank line); keeps only the incomplete tail."""

    __slots__ = ("_tail",)

    def __init__(self) -> None:
        self._tail = b""

    def feed(self, chunk: bytes) -> bytes:
        """The complete events now available (possibly several, possibly none)."""
        data = self._tail + chunk if self._tail else chunk
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n")
        end = data.rfind(b"\n\n")
        if end < 0:
            self._tail = data
            return b""
        self._tail = data[end + 2 :]
        return data[: end + 2]

    def rest(self) -> bytes:
        tail, self._tail = self._tail, b""
        return tail


@dataclass(slots=True)
class Opened:
    """A stream whose first complete events have arrived; the rest is still upstream."""

    response: aiohttp.ClientResponse
    chunks: AsyncIterator[bytes]
    splitter: SSESplitter
    first_events: bytes
    first_event_at: float  # perf_counter


class RelayState(Protocol):
    """What a relayed stream is read by, per API (chat completions: ``StreamState``; the Responses API and
    Anthropic's Messages API have their own, gateway/llm/openai_responses.py and anthropic_messages.py)."""

    events: int  # events relayed so far
    first_delta_at: float | None  # when the first output delta arrived (perf_counter), for the APIs that tell

    def feed(self, events: bytes, at: float | None = None) -> None:
        """Read complete events (``at``: when they arrived, when that was before this call)."""

    def finish(self) -> AnswerSummary: ...

    def error_event(self, error: GatewayError) -> bytes:
        """The one event that ends a stream failing after its first byte, in the API's shape."""


class StreamState:
    """Usage, finish reasons and (when capturing) the output of a chat or text completion stream, gathered
    while events pass through. Its first chunk is its first delta (``first_delta_at`` stays None)."""

    __slots__ = ("operation", "summary", "capture", "events", "first_delta_at", "_finish", "_texts", "_tools", "_roles")

    def __init__(self, operation: str, *, capture: bool) -> None:
        self.operation = operation
        self.summary = AnswerSummary()
        self.capture = capture
        self.events = 0
        self.first_delta_at: float | None = None
        self._finish: dict[int, str] = {}
        self._texts: dict[int, list[str]] = {}
        self._tools: dict[int, dict[int, dict[str, Any]]] = {}
        self._roles: dict[int, str] = {}

    def error_event(self, error: GatewayError) -> bytes:
        return sse_error_event(error)

    def feed(self, events: bytes, at: float | None = None) -> None:
        for event in events.split(b"\n\n"):
            if not event:
                continue
            self.events += 1
            for line in event.split(b"\n"):
                if line.startswith(b"data:"):
                    payload = line[5:].strip()
                    if payload and payload != b"[DONE]":
                        self._read_chunk(payload)

    def _read_chunk(self, payload: bytes) -> None:
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return
        if not isinstance(chunk, dict):
            return
        summary = self.summary
        if summary.response_id is None:
            summary.read_header(chunk)
        usage = chunk.get("usage")
        if usage:
            summary.read_usage(usage)  # the final usage chunk (include_usage); never summed over chunks
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            index = choice.get("index", 0)
            reason = choice.get("finish_reason")
            if reason:
                self._finish[index] = str(reason)
            if self.capture:
                self._capture(index, choice)

    def _capture(self, index: int, choice: dict[str, Any]) -> None:
        if self.operation == sc.OPERATION_CHAT:
            delta = choice.get("delta") or {}
            if delta.get("role"):
                self._roles[index] = delta["role"]
            if delta.get("content"):
                self._texts.setdefault(index, []).append(delta["content"])
            for call in delta.get("tool_calls") or ():
                slot = self._tools.setdefault(index, {}).setdefault(
                    call.get("index", 0), {"id": None, "name": None, "arguments": []}
                )
                function = call.get("function") or {}
                if call.get("id"):
                    slot["id"] = call["id"]
                if function.get("name"):
                    slot["name"] = function["name"]
                if function.get("arguments"):
                    slot["arguments"].append(function["arguments"])
        elif choice.get("text"):
            self._texts.setdefault(index, []).append(choice["text"])

    def finish(self) -> AnswerSummary:
        summary = self.summary
        summary.finish_reasons = [self._finish[i] for i in sorted(self._finish)]
        if self.capture:
            messages = []
            for index in sorted(set(self._texts) | set(self._tools) | set(self._finish)):
                parts: list[dict[str, Any]] = []
                if index in self._texts:
                    parts.append({"type": "text", "content": "".join(self._texts[index])})
                for _, call in sorted(self._tools.get(index, {}).items()):
                    arguments = "".join(call["arguments"])
                    parts.append({"type": "tool_call", "id": call["id"], "name": call["name"], "arguments": arguments})
                role = self._roles.get(index, "assistant")
                messages.append({"role": role, "parts": parts, "finish_reason": self._finish.get(index)})
            summary.output_messages = messages
        return summary


StreamEnd = Callable[[AnswerSummary, "ProxyError | None", bool], None]  # (summary, error, client disconnected)


class StreamingAnswer(Response):
    """An ASGI response relaying an upstream SSE stream whose first events have already arrived.

    Runs the pump and a disconnect watcher side by side; whichever ends first decides. ``on_end`` is
    called exactly once, after the upstream connection is closed.
    """

    def __init__(self, opened: Opened, state: RelayState, target_label: str, on_end: StreamEnd) -> None:
        self._response = opened.response
        self._chunks = opened.chunks
        self._splitter = opened.splitter
        self._first = opened.first_events
        self._first_at = opened.first_event_at
        self._state = state
        self._target = target_label
        self._on_end = on_end
        self._disconnected = False
        self.status_code = 200
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The first events go out before anything else is set up: they are what the client waits for.
        try:
            await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
            await send({"type": "http.response.body", "body": self._first, "more_body": True})
        except OSError:  # the client went away (servers speaking ASGI spec 2.4 raise on send)
            self._disconnected = True
        except BaseException:  # cancelled (server shutdown): the upstream is closed and the call recorded
            self._state.feed(self._first, self._first_at)
            self._finish(complete=False, error=None)
            raise
        self._state.feed(self._first, self._first_at)
        if self._disconnected:
            self._finish(complete=False, error=None)
            await self._send_quietly(send, b"", more_body=False)
            return
        loop = asyncio.get_running_loop()
        pump = loop.create_task(self._pump(send))
        watcher = loop.create_task(self._watch_disconnect(receive))
        try:
            await asyncio.wait((pump, watcher), return_when=asyncio.FIRST_COMPLETED)
            if not pump.done():
                self._disconnected = True
        finally:
            for task in (pump, watcher):
                if not task.done():
                    task.cancel()
            await asyncio.gather(pump, watcher, return_exceptions=True)

    async def _watch_disconnect(self, receive: Receive) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return

    async def _pump(self, send: Send) -> None:
        """Relays the events after the first ones; ``on_end`` when the stream ends, however it ends."""
        state = self._state
        error: ProxyError | None = None
        complete = False
        try:
            splitter = self._splitter
            async for chunk in self._chunks:
                events = splitter.feed(chunk)
                if events:
                    state.feed(events)
                    await send({"type": "http.response.body", "body": events, "more_body": True})
            complete = True
            tail = splitter.rest()
            if tail:  # an unterminated last event: relayed as it came (clients discard it, as without us)
                await send({"type": "http.response.body", "body": tail, "more_body": True})
        except aiohttp.ClientError as exc:  # before OSError: some aiohttp errors are OSErrors too
            error = self._interrupted(exc)
            await self._send_quietly(send, state.error_event(error))
        except OSError:  # the client went away (servers speaking ASGI spec 2.4 raise on send)
            self._disconnected = True
        finally:
            self._finish(complete, error)
        await self._send_quietly(send, b"", more_body=False)

    def _finish(self, complete: bool, error: ProxyError | None) -> None:
        if complete:
            self._response.release()  # read to the end: the connection goes back to the pool
        else:
            self._response.close()  # closes the connection, so the upstream stops generating
        self._on_end(self._state.finish(), error, self._disconnected)

    def _interrupted(self, exc: aiohttp.ClientError) -> ProxyError:
        name = type(exc).__name__
        logger.warning("Upstream %s failed after the stream started: %s: %s", self._target, name, exc)
        if isinstance(exc, aiohttp.ServerTimeoutError):
            return UpstreamTimeoutError(
                f"Upstream {self._target} went silent mid-stream ({name}); the stream ends here.",
                code="upstream_timeout",
                error_type=name,
            )
        return UpstreamError(
            f"Upstream {self._target} failed mid-stream ({name}); the stream ends here.",
            code="upstream_stream_interrupted",
            error_type=name,
        )

    async def _send_quietly(self, send: Send, body: bytes, *, more_body: bool = True) -> None:
        try:
            await send({"type": "http.response.body", "body": body, "more_body": more_body})
        except OSError:
            self._disconnected = True
