"""What one ``/invocations`` request may hold, and what a large one costs the worker that parses it.

- ``serving.max_rows``: a request with more rows is refused (413, naming the setting) as soon as its rows
  are counted, before any value is converted: a million-row CSV otherwise costs seconds of CPU and
  hundreds of megabytes before the model sees it.
- ``serving.parse_offload_bytes``: a body larger than this is parsed and checked in a parser thread,
  so the event loop keeps answering the worker's other requests meanwhile (parsing is about 75 ms per
  MB of JSON and 250 ms per MB of CSV on this machine kind, docs/benchmarks.md); a small body is parsed
  on the loop, where it costs microseconds and a thread hop would cost more.
- After such a large request, the C heap's free memory goes back to the system (``malloc_trim``, glibc
  only, at most once a second, in the parser thread): the allocator otherwise keeps the peak for the
  life of the worker (RSS rose from 125 to 408 MB after a few large bodies and stayed there).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from gateway.errors import GatewayError

logger = logging.getLogger("gateway.serving")

DEFAULT_MAX_ROWS = 100_000
DEFAULT_PARSE_OFFLOAD_BYTES = 64 * 1024
_TRIM_INTERVAL_S = 1.0
_TRIM_DELAY_S = 0.1
T = TypeVar("T")


class TooManyRows(GatewayError):
    status = 413
    error_code = "REQUEST_LIMIT_EXCEEDED"


def check_rows(rows: int, max_rows: int) -> None:
    if rows > max_rows:
        raise TooManyRows(
            f"The request holds {rows:,} rows; serving.max_rows allows {max_rows:,} per request. "
            "Send fewer rows per request, or raise serving.max_rows."
        )


def _load_malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim  # ctypes releases the GIL during the call
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None
    return trim


def _rss_mb() -> int | None:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // (1024 * 1024)
    except (OSError, ValueError, IndexError):
        return None


class LargeBodies:
    """The parser thread for large bodies (two: a third large body waits, which bounds the memory that
    parsing large bodies holds at once) and the heap trim after them."""

    def __init__(self, threads: int = 2) -> None:
        self._executor: ThreadPoolExecutor | None = None
        self._threads = threads
        self._malloc_trim = _load_malloc_trim()
        self._last_trim = 0.0
        self._trim_pending = False

    async def run(self, call: Callable[[], T]) -> T:
        """``call()`` in a parser thread."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self._threads, thread_name_prefix="body-parse")
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    def release_memory_soon(self) -> None:
        """Once a large request is done with its arrays: trim the heap shortly after (by then its answer
        has been sent), at most once a second."""
        if self._malloc_trim is None or self._trim_pending:
            return
        self._trim_pending = True
        delay = max(_TRIM_DELAY_S, self._last_trim + _TRIM_INTERVAL_S - time.monotonic())
        loop = asyncio.get_running_loop()
        loop.call_later(delay, self._trim, loop)

    def _trim(self, loop: asyncio.AbstractEventLoop) -> None:
        self._trim_pending = False
        self._last_trim = time.monotonic()
        if self._executor is not None and self._malloc_trim is not None:
            with contextlib.suppress(RuntimeError):  # the executor was shut down
                loop.run_in_executor(self._executor, self._trim_heap)

    def _trim_heap(self) -> None:
        assert self._malloc_trim is not None
        before = _rss_mb()
        self._malloc_trim(0)
        logger.debug("malloc_trim after a large request: RSS %s -> %s MB", before, _rss_mb())


# One per worker process: its parser threads are shared by every model the worker serves.
LARGE_BODIES = LargeBodies()
