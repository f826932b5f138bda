"""Same-tick batching for inline models: requests that reach a fast model in one event-loop iteration
share one model call, on the loop.

Under load, uvicorn starts many requests in one loop iteration (one task per readable connection), and
each runs without awaiting up to its model call. For an inline model (calls so short that the hop to
a thread would cost more than the call) every call still pays onnxruntime's fixed cost per run and the
feeds and output shaping around it; joining the requests of one iteration pays that once. The first
request of an iteration schedules a flush with ``loop.call_soon`` and awaits; those that arrive before
the flush runs join it. The flush joins compatible inputs (``batch_data``), runs the model once, shapes
the output for JSON once (``output.to_jsonable``) and hands each request its rows of it.

Waiting for the flush costs each request one more loop iteration, which buys nothing when requests come
one at a time. So the batcher starts direct (every call runs at once, as without it) and lets every
``PROBE_EVERY``-th request wait for a flush; a flush that finds company switches to waiting, and
``LONELY_FLUSHES`` flushes in a row with a single request switch back.

A joined call that raises, or whose output is not one row per input row, is rerun request by request,
so each request gets exactly the answer (or the error) it gets alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from gateway.serving.batch_data import batch_key, join_inputs, output_rows, row_bounds, split_output
from gateway.serving.batch_stats import TickStats

# In direct mode, one request in this many waits for a flush to find out whether others arrive with it.
PROBE_EVERY = 16
# Flushes in a row that found a single request before going back to direct mode.
LONELY_FLUSHES = 4


@dataclass(eq=False, slots=True)
class _Waiter:
    data: Any
    rows: int
    key: Hashable
    future: asyncio.Future[Any]


class TickBatcher:
    """Joins the calls of one loop iteration for an inline model. ``predict(data, None)`` is blocking and
    fast; it raises the error a request gets (a ``GatewayError``). ``shape(output)`` makes an output
    JSON-ready; for a joined call it runs once, and when it gives one list item per input row each
    request gets its slice of that list. Use it on the event loop only."""

    def __init__(self, predict: Callable[[Any, None], Any], shape: Callable[[Any], Any], max_batch_rows: int) -> None:
        self._predict = predict
        self._shape = shape
        self._max_rows = max_batch_rows
        self._pending: list[_Waiter] | None = None
        self._waiting = False  # tick mode: every request waits for the flush
        self._countdown = PROBE_EVERY
        self._lonely = 0
        self.stats = TickStats()

    def join(self, data: Any) -> asyncio.Future[Any] | None:
        """A future for ``data``'s shaped output (params: none) from the call this loop iteration's
        requests share; None when the request should call at once: the batcher is in direct mode and this
        is not a probe, or ``data`` cannot share a call. Not a coroutine: the caller awaits the future."""
        if not self._waiting and self._pending is None:
            self._countdown -= 1
            if self._countdown:
                return None
            self._countdown = PROBE_EVERY
        keyed = batch_key(data)
        if keyed is None:
            return None
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        pending = self._pending
        if pending is None:
            pending = self._pending = []
            loop.call_soon(self._flush)
        pending.append(_Waiter(data, keyed[1], keyed[0], future))
        return future

    def _flush(self) -> None:
        waiters = self._pending or []
        self._pending = None
        stats = self.stats
        stats.flushes += 1
        if len(waiters) > 1:
            self._lonely = 0
            self._waiting = True
        else:
            self._lonely += 1
            if self._lonely >= LONELY_FLUSHES:
                self._waiting = False
        try:
            self._run(waiters)
        finally:
            for waiter in waiters:  # a bug above must not leave a request waiting forever
                if not waiter.future.done():
                    waiter.future.set_exception(RuntimeError("inline batch flush failed"))

    def _run(self, waiters: list[_Waiter]) -> None:
        # Compatible requests (same structure), in arrival order, up to max_batch_rows per call.
        groups: dict[Hashable, list[_Waiter]] = {}
        for waiter in waiters:
            if not waiter.future.done():  # its caller is gone
                groups.setdefault(waiter.key, []).append(waiter)
        limit = self._max_rows
        for group in groups.values():
            batch: list[_Waiter] = []
            rows = 0
            for waiter in group:
                if batch and rows + waiter.rows > limit:
                    self._run_batch(batch, rows)
                    batch, rows = [], 0
                batch.append(waiter)
                rows += waiter.rows
            self._run_batch(batch, rows)

    def _run_batch(self, batch: list[_Waiter], rows: int) -> None:
        if len(batch) == 1:
            self._run_alone(batch[0])
            return
        try:
            output = self._predict(join_inputs([w.data for w in batch]), None)
        except Exception:
            output = None
        if output is None or output_rows(output) != rows:
            self.stats.reruns += 1
            for waiter in batch:
                self._run_alone(waiter)
            return
        bounds = row_bounds([w.rows for w in batch])
        try:
            shaped = self._shape(output)
        except Exception:
            shaped = None
        if isinstance(shaped, list) and len(shaped) == rows:  # one item per row: slices are the answers
            for waiter, (begin, end) in zip(batch, bounds, strict=True):
                waiter.future.set_result(shaped[begin:end])
        else:
            for waiter, piece in zip(batch, split_output(output, bounds), strict=True):
                try:
                    waiter.future.set_result(self._shape(piece))
                except Exception as exc:
                    waiter.future.set_exception(exc)
        stats = self.stats
        stats.joined_calls += 1
        stats.joined_requests += len(batch)
        stats.largest_joined_requests = max(stats.largest_joined_requests, len(batch))
        stats.largest_joined_rows = max(stats.largest_joined_rows, rows)

    def _run_alone(self, waiter: _Waiter) -> None:
        try:
            result = self._shape(self._predict(waiter.data, None))
        except Exception as exc:
            waiter.future.set_exception(exc)
            return
        waiter.future.set_result(result)
