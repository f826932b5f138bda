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
from typing import Any

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


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's ``HttpToolsProtocol`` over a ``CoalescingTransport``."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        # (uvloop's transports are not asyncio.Transport subclasses, hence no isinstance check)
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]


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
