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
``gateway serve`` selects it with uvicorn's ``http`` setting when httptools is installed.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

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

    def __getattr__(self, name: str) -> Any:
        # Everything else (is_closing, get_extra_info, pause_reading, set_protocol, ...) is the real one's.
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's ``HttpToolsProtocol`` over a ``CoalescingTransport``."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        # (uvloop's transports are not asyncio.Transport subclasses, hence no isinstance check)
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
