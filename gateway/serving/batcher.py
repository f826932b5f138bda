"""Work-conserving dynamic batching for one model version, with bounded queues and deadlines.

While the model is idle a request runs at once; while it runs, arrivals queue, and the next run takes
the oldest queued request plus every later one with the same structure (``batch_key``) and equal
``params``, in arrival order, up to ``max_batch_rows`` rows. One run is in flight at a time, in the
model's own executor thread, so joining, the model call and splitting stay off the event loop.

- A request larger than ``max_batch_rows`` is queued as consecutive chunks; its answer is the chunks'
  outputs joined in order.
- If a joined call raises, the batch is bisected and retried, so a request that poisons the model
  gets the error it would get alone and its batch-mates their answers.
- A model whose output does not have one row per input row (a pyfunc returning a summary, say) is
  then run one request at a time, from that call on.
- Bounds: a request that would take the queue past ``max_queue_requests`` or ``max_queue_rows`` is
  refused at once (503 + Retry-After). The first request of an empty queue is always admitted, so a
  request larger than ``max_queue_rows`` can still run.
- Deadlines: a request still queued when its deadline passes is removed and answered 504 at that
  moment; once a request (or its first chunk) has started, it finishes.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from gateway import metrics
from gateway.errors import DeadlineExceeded, GatewayError, ServiceUnavailable
from gateway.serving.batch_data import (
    batch_key,
    join_inputs,
    join_outputs,
    output_rows,
    row_bounds,
    split_input,
    split_output,
)
from gateway.serving.batch_settings import BatchSettings
from gateway.serving.batch_stats import BatchStats
from gateway.serving.runtimes._common import predict_error

logger = logging.getLogger("gateway.serving")

_ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
QUEUE_WAIT = metrics.histogram(
    "gateway_queue_wait_seconds", "Time requests waited in a model's queue before their run started.",
    ("model", "version"), buckets=metrics.LATENCY_BUCKETS,
)  # fmt: skip
MODEL_RUN = metrics.histogram(
    "gateway_model_run_seconds", "Duration of queued model runs (one per batch; inline calls are not timed).",
    ("model", "version"), buckets=metrics.LATENCY_BUCKETS,
)  # fmt: skip
BATCH_ROWS = metrics.histogram(
    "gateway_batch_rows", "Rows per queued model run.", ("model", "version"), buckets=_ROW_BUCKETS
)
BATCH_REQUESTS = metrics.histogram(
    "gateway_batch_requests", "Requests (or chunks of a split request) per queued model run.",
    ("model", "version"), buckets=_ROW_BUCKETS,
)  # fmt: skip
QUEUE_DEPTH_REQUESTS = metrics.gauge(
    "gateway_queue_depth_requests", "Requests waiting in a model's queue.", ("model", "version")
)
QUEUE_DEPTH_ROWS = metrics.gauge("gateway_queue_depth_rows", "Rows waiting in a model's queue.", ("model", "version"))
REJECTIONS = metrics.counter(
    "gateway_rejections_total",
    "Requests refused: queue_full_rows, queue_full_requests, deadline (504) or bad_request (4xx before the model).",
    ("model", "cause"),
)

# What a blocking run returns per part: (True, output) or (False, the error that part gets).
Outcome = tuple[bool, Any]
Predict = Callable[[Any, "dict[str, Any] | None"], Any]


class _Misaligned(Exception):
    """A chunk of a split request got an output that is not one row per input row."""


@dataclass(eq=False, slots=True)
class _Job:
    """One request: the future its caller awaits, its deadline, and its parts' outputs."""

    future: asyncio.Future[Any]
    data: Any
    params: dict[str, Any] | None
    rows: int
    deadline: float
    timeout_s: float
    queued_at: float
    parts: list[_Part] = field(default_factory=list)
    outputs: list[Any] = field(default_factory=list)
    waiting_parts: int = 0  # parts in the queue
    pending_parts: int = 0  # parts without an outcome yet
    started: bool = False  # a part has been taken for a run (or the job was dropped)
    misaligned: bool = False
    timer: asyncio.TimerHandle | None = None


@dataclass(eq=False, slots=True)
class _Part:
    """What the queue holds: a whole request, or one chunk of a split one."""

    job: _Job
    index: int
    data: Any
    rows: int
    key: Hashable | None  # None: runs alone
    chunked: bool = False
    queued: bool = False
    dropped: bool = False  # left the queue early; skipped when met


class Batcher:
    """Queue and batch one model version's requests. ``predict(data, params)`` is blocking; it runs
    in ``executor``. Create and use the batcher on the event loop."""

    def __init__(
        self, predict: Predict, executor: Executor, settings: BatchSettings, *, name: str, version: int
    ) -> None:
        self._predict = predict
        self._executor = executor
        self.settings = settings
        self.name = name
        self.version = version
        self._labels = (name, str(version))
        self._queue: deque[_Part] = deque()
        self.queued_requests = 0
        self.queued_rows = 0
        self._dropped = 0  # dropped parts still in the deque
        self._busy = False
        self._wait_handle: asyncio.TimerHandle | None = None
        self._wait_over = False
        self._row_aligned = True  # cleared, for good, by an output that is not one row per input row
        self._ewma_run_s = 0.0
        self.stats = BatchStats()
        # 0: batching off, every request runs alone.
        self._max_rows = settings.max_batch_rows if settings.batching else 0
        self._wait_s = settings.max_wait_ms / 1000.0 if settings.batching else 0.0

    # ------------------------------------------------------------------ submitting

    async def submit(
        self, data: Any, params: dict[str, Any] | None, *, started: float, timeout_s: float | None = None
    ) -> Any:
        """Run ``data`` through the model, batched with others when possible; returns its output.

        ``started``: when the request arrived, on the ``time.monotonic()`` clock. ``timeout_s``: the
        client's own deadline, which may only shorten ``request_timeout_s``.
        """
        loop = asyncio.get_running_loop()
        limit = self.settings.request_timeout_s
        if timeout_s is not None and timeout_s < limit:
            limit = timeout_s
        keyed = batch_key(data)
        key, rows = keyed if keyed is not None else (None, 1)
        now = time.monotonic()
        if started + limit <= now:
            REJECTIONS.inc((self.name, "deadline"))
            self.stats.expired += 1
            raise self._deadline_error(limit)
        self._admit(rows)
        job = _Job(loop.create_future(), data, params, rows, started + limit, limit, now)
        max_rows = self._max_rows
        if not max_rows:
            job.parts = [_Part(job, 0, data, rows, None)]
        elif key is not None and rows > max_rows and self._row_aligned:
            job.parts = [
                _Part(job, i, chunk, min(max_rows, rows - i * max_rows), key, chunked=True)
                for i, chunk in enumerate(split_input(data, rows, max_rows))
            ]
            self.stats.split_requests += 1
        else:
            job.parts = [_Part(job, 0, data, rows, key)]
        job.outputs = [None] * len(job.parts)
        job.pending_parts = len(job.parts)
        for part in job.parts:
            self._enqueue(part)
        self.stats.requests += 1
        self._dispatch()  # an idle model takes it at once
        if not job.started:
            job.timer = loop.call_later(job.deadline - now, self._expire, job)
        self._publish_depth()
        try:
            return await job.future
        except asyncio.CancelledError:
            # The caller is gone: what has not started never will.
            self._discard(job)
            raise

    def _admit(self, rows: int) -> None:
        settings = self.settings
        if self.queued_requests >= settings.max_queue_requests:
            self._reject(
                "queue_full_requests",
                f"{self.queued_requests} requests are queued (max_queue_requests={settings.max_queue_requests})",
            )
        if self.queued_rows and self.queued_rows + rows > settings.max_queue_rows:
            self._reject(
                "queue_full_rows",
                f"{self.queued_rows} rows are queued and this request has {rows} more "
                f"(max_queue_rows={settings.max_queue_rows})",
            )

    def _reject(self, cause: str, why: str) -> None:
        REJECTIONS.inc((self.name, cause))
        self.stats.rejected_queue_full += 1
        retry = self.retry_after_s()
        raise ServiceUnavailable(
            f"Model {self.name!r} version {self.version} is overloaded: {why}. Retry after {retry} s.",
            retry_after_s=retry,
        )

    def retry_after_s(self) -> int:
        """Seconds until the queue has likely drained: runs ahead times the recent run time, 1 to 60."""
        runs = math.ceil(self.queued_rows / self._max_rows) if self._max_rows else self.queued_requests
        return max(1, min(60, math.ceil(runs * self._ewma_run_s)))

    def _deadline_error(self, limit: float) -> DeadlineExceeded:
        return DeadlineExceeded(
            f"Request to model {self.name!r} version {self.version} passed its deadline of "
            f"{limit * 1000:.0f} ms before the model could run it ({self.queued_requests} requests queued)."
        )

    def _enqueue(self, part: _Part, *, front: bool = False) -> None:
        if front:
            self._queue.appendleft(part)
        else:
            self._queue.append(part)
        part.queued = True
        self.queued_rows += part.rows
        job = part.job
        job.waiting_parts += 1
        if job.waiting_parts == 1:
            self.queued_requests += 1

    def _publish_depth(self) -> None:
        QUEUE_DEPTH_REQUESTS.set(self._labels, self.queued_requests)
        QUEUE_DEPTH_ROWS.set(self._labels, self.queued_rows)

    # ------------------------------------------------------------------ leaving the queue early

    def _expire(self, job: _Job) -> None:
        job.timer = None
        if job.started or job.future.done():
            return
        self._discard(job)
        REJECTIONS.inc((self.name, "deadline"))
        self.stats.expired += 1
        job.future.set_exception(self._deadline_error(job.timeout_s))

    def _discard(self, job: _Job) -> None:
        """Drop a request's queued parts (its deadline passed, its caller left, or a part failed)."""
        job.started = True  # nothing of it starts from now on
        if job.timer is not None:
            job.timer.cancel()
            job.timer = None
        if not job.waiting_parts:
            return
        for part in job.parts:
            if part.queued:
                part.queued = False
                part.dropped = True
                self._dropped += 1
                self.queued_rows -= part.rows
                job.pending_parts -= 1  # it will never have an outcome
        job.waiting_parts = 0
        self.queued_requests -= 1
        if self._dropped > 16 and self._dropped * 2 > len(self._queue):
            self._queue = deque(p for p in self._queue if not p.dropped)
            self._dropped = 0
        self._publish_depth()

    # ------------------------------------------------------------------ dispatching

    def _dispatch(self) -> None:
        """Start the next run if the model is free and something is queued (after max_wait_ms, if set)."""
        if self._busy:
            return
        queue = self._queue
        while queue and queue[0].dropped:
            queue.popleft()
            self._dropped -= 1
        if not queue:
            return
        if self._wait_s and not self._wait_over and self.queued_rows < self._max_rows:
            if self._wait_handle is None:
                self._wait_handle = asyncio.get_running_loop().call_later(self._wait_s, self._end_wait)
            return
        if self._wait_handle is not None:
            self._wait_handle.cancel()
            self._wait_handle = None
        self._wait_over = False
        self._start(self._take())

    def _end_wait(self) -> None:
        self._wait_handle = None
        self._wait_over = True
        self._dispatch()

    def _take(self) -> list[_Part]:
        """The oldest queued part and every later compatible one, in order, up to max_batch_rows."""
        queue = self._queue
        head = queue.popleft()
        batch = [head]
        if head.key is None:
            return batch
        rows, limit, params = head.rows, self._max_rows, head.job.params
        skipped: list[_Part] = []
        while queue and rows < limit:
            part = queue.popleft()
            if part.dropped:
                self._dropped -= 1
                continue
            if part.key != head.key or part.job.params != params:
                skipped.append(part)
                continue
            if rows + part.rows > limit:
                queue.appendleft(part)
                break
            batch.append(part)
            rows += part.rows
        if skipped:
            queue.extendleft(reversed(skipped))
        return batch

    def _start(self, batch: list[_Part]) -> None:
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        self._busy = True
        for part in batch:
            part.queued = False
            self.queued_rows -= part.rows
            job = part.job
            job.waiting_parts -= 1
            if not job.waiting_parts:
                self.queued_requests -= 1
            if not job.started:
                job.started = True
                if job.timer is not None:
                    job.timer.cancel()
                    job.timer = None
                QUEUE_WAIT.observe(self._labels, now - job.queued_at)
        try:
            future = loop.run_in_executor(self._executor, self._run_blocking, batch)
        except RuntimeError as exc:  # the executor is shut down: the version is being unloaded
            self._busy = False
            error = ServiceUnavailable(f"Model {self.name!r} version {self.version} was unloaded ({exc}).")
            for part in batch:
                self._deliver(part, (False, error))
            loop.call_soon(self._dispatch)  # the rest fails the same way, one run at a time
            return
        future.add_done_callback(partial(self._finish, batch, now))

    def _finish(self, batch: list[_Part], started: float, future: asyncio.Future[list[Outcome]]) -> None:
        self._busy = False
        run_s = time.monotonic() - started
        outcomes: list[Outcome]
        if future.cancelled():
            error = ServiceUnavailable(f"Model {self.name!r} version {self.version} was unloaded.")
            outcomes = [(False, error)] * len(batch)
        elif future.exception() is not None:
            exc = future.exception()
            logger.error("Model %s version %s: batch run failed", self.name, self.version, exc_info=exc)
            outcomes = [(False, GatewayError(f"Internal error running model {self.name!r}: {exc!r}"))] * len(batch)
        else:
            outcomes = future.result()
        rows = sum(p.rows for p in batch)
        labels = self._labels
        MODEL_RUN.observe(labels, run_s)
        BATCH_ROWS.observe(labels, rows)
        BATCH_REQUESTS.observe(labels, len(batch))
        stats = self.stats
        stats.runs += 1
        stats.rows += rows
        if len(batch) > 1:
            stats.batched_runs += 1
        stats.largest_batch_requests = max(stats.largest_batch_requests, len(batch))
        stats.largest_batch_rows = max(stats.largest_batch_rows, rows)
        self._ewma_run_s = run_s if not self._ewma_run_s else 0.8 * self._ewma_run_s + 0.2 * run_s
        for part, outcome in zip(batch, outcomes, strict=True):
            self._deliver(part, outcome)
        for part in batch:
            job = part.job
            if job.misaligned and not job.future.done() and not job.pending_parts:
                # Its chunks' outputs cannot be joined: run the request whole, next.
                job.misaligned = False
                whole = _Part(job, 0, job.data, job.rows, None)
                job.parts, job.outputs, job.pending_parts = [whole], [None], 1
                self._enqueue(whole, front=True)
        self._dispatch()
        self._publish_depth()

    def _deliver(self, part: _Part, outcome: Outcome) -> None:
        job = part.job
        job.pending_parts -= 1
        if job.future.done():
            return  # failed by another part, or the caller is gone
        ok, value = outcome
        if not ok:
            if isinstance(value, _Misaligned):
                job.misaligned = True  # run whole once its other parts are in (see _finish)
                self._discard(job)
                return
            self._discard(job)
            job.future.set_exception(value)
            return
        job.outputs[part.index] = value
        if job.pending_parts or job.misaligned:
            return
        if len(job.outputs) == 1:
            job.future.set_result(job.outputs[0])
            return
        joined = join_outputs(job.outputs)
        if joined is None:
            self._row_aligned = False
            job.misaligned = True  # run whole (see _finish)
        else:
            job.future.set_result(joined)

    # ------------------------------------------------------------------ in the model's thread

    def _run_blocking(self, batch: list[_Part]) -> list[Outcome]:
        if len(batch) == 1:
            return [self._run_one(batch[0])]
        if not self._row_aligned:
            return [self._run_one(part) for part in batch]
        return self._run_joined(batch)

    def _run_joined(self, parts: list[_Part]) -> list[Outcome]:
        """One call for all ``parts``; if it raises, each half again, down to single requests."""
        if len(parts) == 1:
            return [self._run_one(parts[0])]
        try:
            output = self._predict(join_inputs([p.data for p in parts]), parts[0].job.params)
        except Exception:
            self.stats.bisections += 1
            middle = len(parts) // 2
            return self._run_joined(parts[:middle]) + self._run_joined(parts[middle:])
        total = sum(p.rows for p in parts)
        if output_rows(output) != total:
            if self._row_aligned:
                logger.warning(
                    "Model %s version %s answered %d rows with an output that is not one row per input row: "
                    "its requests run one by one from now on",
                    self.name, self.version, total,
                )  # fmt: skip
            self._row_aligned = False
            return [self._run_one(part) for part in parts]
        return [(True, piece) for piece in split_output(output, row_bounds([p.rows for p in parts]))]

    def _run_one(self, part: _Part) -> Outcome:
        try:
            output = self._predict(part.data, part.job.params)
        except Exception as exc:
            return (False, predict_error(exc))
        if part.chunked and output_rows(output) != part.rows:
            self._row_aligned = False
            return (False, _Misaligned())
        return (True, output)

    # ------------------------------------------------------------------ introspection

    def describe(self) -> dict[str, Any]:
        return {
            "queue": {"requests": self.queued_requests, "rows": self.queued_rows, "running": self._busy},
            "stats": self.stats.as_dict(),
            "row_aligned_outputs": self._row_aligned,
        }

    def close(self) -> None:
        """Forget this version's queue gauges (it is being unloaded)."""
        QUEUE_DEPTH_REQUESTS.remove(self._labels)
        QUEUE_DEPTH_ROWS.remove(self._labels)
