"""uvicorn's httptools protocol, with the writes of one event-loop iteration sent in one piece.

uvicorn writes a response's status line and headers as soon as the app sends ``http.response.start``,
and the body in a second ``transport.write`` when ``http.response.body`` follows: two ``send()`` system
calls and two TCP segments for every small answer, and a client that may wake up twice. Here the
protocol's transport is wrapped so that what is written during one iteration of the event loop is
joined and written once, at the end of that iteration (``loop.call_soon``): a prediction's headers and
body leave together, while each event of a stream still leaves in the iteration that produced it (no
event waits for the next one). On the iris target cell (1 worker, 64 connections, paired rounds) it
took less CPU per request and served more requests per second in every round (docs/benchmarks.md,
"One write per response").

Nothing else changes: parsing, keep-alive, flow control and every response byte are uvicorn's. What is
held back is bounded (written at once past ``FLUSH_AT`` bytes) and flushed before the connection closes.

This leans on uvicorn's private ``HttpToolsProtocol``, so: pyproject.toml bounds uvicorn to the minor
versions it was tested with; the wrapper implements each transport method uvicorn calls explicitly (no
``__getattr__``: a method uvicorn starts calling later, say ``writelines``, fails loudly instead of
bypassing what is held back), and tests/test_http_protocol.py reads uvicorn's source to check that list;
``select_http_protocol()`` (what ``gateway serve`` uses) falls back to uvicorn's own protocol, with a
warning, when httptools or the private class is missing.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import orjson

logger = logging.getLogger("gateway.http_protocol")

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    _IMPORT_PROBLEM: str | None = None
except ImportError as exc:  # no httptools, or uvicorn moved its private module: select_http_protocol() falls back
    HttpToolsProtocol = object  # type: ignore[assignment,misc]
    _IMPORT_PROBLEM = f"uvicorn's HttpToolsProtocol cannot be imported ({exc})"

PROTOCOL_PATH = "gateway.http_protocol:CoalescingHttpToolsProtocol"

# Bytes held back past which a write goes out at once (a large body is not gathered in memory).
FLUSH_AT = 64 * 1024


class CoalescingTransport:
    """A transport whose writes within one loop iteration reach the real transport as one write."""

    __slots__ = ("_transport", "_loop", "_held", "_held_bytes")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] | None = None  # None: nothing held and no flush scheduled
        self._held_bytes = 0

    def write(self, data: bytes) -> None:
        held = self._held
        if held is None:
            self._held = [data]
            self._held_bytes = len(data)
            self._loop.call_soon(self.flush)
        else:
            held.append(data)
            self._held_bytes += len(data)
        if self._held_bytes >= FLUSH_AT:
            self.flush()

    def flush(self) -> None:
        """Write what is held (the scheduled call finds nothing when a large write flushed early)."""
        held = self._held
        if held is None:
            return
        self._held = None
        if self._transport.is_closing():  # the peer went away: uvicorn drops such writes too
            return
        self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._held = None  # what an abort discards
        self._transport.abort()

    def write_eof(self) -> None:
        """Send what is held, then end our side of the connection (the refused-head answer's lingering close)."""
        self.flush()
        if self._transport.can_write_eof():
            self._transport.write_eof()

    # The rest of what uvicorn's HTTP protocol calls (tests/test_http_protocol.py checks this list
    # against uvicorn's source), passed to the real transport.

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()


@dataclass(frozen=True, slots=True)
class HeadLimits:
    """What a request head may take (``Settings.http``): time, header count, bytes."""

    timeout_s: float = 10.0
    max_headers: int = 100
    max_bytes: int = 64 * 1024


# Set once per process before the server starts (``configure``: gateway serve, and each worker's app factory).
_limits = HeadLimits()


def configure(limits: HeadLimits) -> None:
    global _limits
    _limits = limits


class _HeadRefused(Exception):
    """Raised from a parser callback once the connection has been answered: stops the parser."""


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's ``HttpToolsProtocol`` over a ``CoalescingTransport``, with bounds on the request head.

    uvicorn reads a request head for as long as it takes and as large as it comes: 200 connections
    sending one byte a second stayed open for a minute, and a 1 MB header or 10,000 headers were taken
    (httptools buffers a header whole before its callback). Here a head must be complete within
    ``timeout_s`` of the connection opening (or of the request's first byte, on a kept-alive
    connection), else 408; more than ``max_headers`` headers or ``max_bytes`` of request line and
    headers is a 431, counted as the bytes arrive. Either way the connection closes after the answer.
    """

    _head_timer: asyncio.TimerHandle | None = None
    _head_bytes = 0
    _header_count = 0
    _refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        # (uvloop's transports are not asyncio.Transport subclasses, hence no isinstance check)
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
        self._limits = _limits
        self._head_timer = self.loop.call_later(self._limits.timeout_s, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        reading_head = self._head_timer is not None
        super().data_received(data)
        if reading_head and self._head_timer is not None and not self._refused:  # the head is still incomplete
            self._head_bytes += len(data)
            if self._head_bytes > self._limits.max_bytes:
                self._refuse(431, f"The request line and headers exceed {self._limits.max_bytes} bytes.")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = self._header_count = 0
        if self._head_timer is None:  # a kept-alive connection's next request: its head has its own deadline
            self._head_timer = self.loop.call_later(self._limits.timeout_s, self._head_timed_out)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self._limits.max_headers:
            self._refuse(431, f"The request has more than {self._limits.max_headers} headers.")
            raise _HeadRefused
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._stop_head_timer()
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        if not self._refused:  # else the parser stopped because the head was refused: answered already
            super().send_400_response(msg)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self._refuse(408, f"The request headers did not arrive within {self._limits.timeout_s:g} s.")

    def _refuse(self, status: int, message: str) -> None:
        """Answer ``status`` with MLflow's error body and close, before any app sees the request."""
        self._refused = True
        self._stop_head_timer()
        body = orjson.dumps({"error_code": _HEAD_ERROR_CODES[status], "message": message})
        reason = _REASONS[status]
        transport = self.transport
        transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
            % (status, reason, len(body))
            + body
        )
        # A lingering close: our side ends now, what the client still sends is read and dropped for a moment,
        # then the connection closes. Closed at once, unread bytes would make the kernel reset the connection,
        # and a client still sending (a 1 MB header) could lose the answer.
        if isinstance(transport, CoalescingTransport):
            transport.write_eof()
        self.loop.call_later(_LINGER_S, transport.close)
        logger.info("Refused a request head (%d): %s", status, message)


_LINGER_S = 2.0
_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}
_HEAD_ERROR_CODES = {408: "REQUEST_TIMEOUT", 431: "REQUEST_LIMIT_EXCEEDED"}


def select_http_protocol() -> str:
    """What ``gateway serve`` hands uvicorn as ``http``: this module's protocol when uvicorn's
    ``HttpToolsProtocol`` (and so httptools) imports and has ``connection_made``, else uvicorn's own
    choice ("auto"), with a warning that says why."""
    if _IMPORT_PROBLEM is not None:  # httptools missing included: uvicorn's module imports it
        reason = _IMPORT_PROBLEM
    elif not callable(getattr(HttpToolsProtocol, "connection_made", None)):
        reason = "uvicorn's HttpToolsProtocol has no connection_made"
    else:
        return PROTOCOL_PATH
    logger.warning(
        "%s: serving with uvicorn's own HTTP protocol (a response's headers and body in two writes); "
        "install the uvicorn version pyproject.toml names",
        reason,
    )
    return "auto"
