"""Feeding an evaluation run to the judge queue: its items' judge jobs enqueued in batches, the outputs that a
target must generate first generated here, in the process that owns the run.

- An item with outputs (or a stored call): its jobs, one per judge (judges/evaluation_jobs.py), go on the
  queue in batches of about ``ENQUEUE_BATCH`` jobs (one ``enqueue`` call each: one Redis pipeline, or one
  store transaction), then the batch's items are marked ``queued`` in one transaction. Marked after the
  enqueue: a process that stops between the two leaves them ``pending``, and the run resumed enqueues them
  again (the jobs' deterministic assessment ids leave one verdict each, with no second call for those
  already judged); never twice otherwise.
- An item without outputs, when the run has a target: its outputs are generated through the target route
  (``LlmProxy.complete``, its own trace tagged ``gateway.evaluation.id``; the outputs, the call's trace and
  span, the prompt version and the model stored on the item before any job is enqueued, so a resumed run
  judges the same outputs), at most ``judges.concurrency`` calls at once in this process whatever the
  number of runs; its jobs are enqueued right after, gathered with the other items generated within
  ``GENERATED_FLUSH_S``. An item whose outputs could not be generated ends ``error`` at once.
- The queue unreachable: the batch is tried again every ``QUEUE_RETRY_S`` until it goes or the run stops.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from sqlalchemy.engine import Engine

from gateway import metrics
from gateway.error_text import first_line
from gateway.llm.completion import Completion
from gateway.llm.errors import ProxyError
from gateway.store.evaluation_runs import set_item_statuses
from gateway.store.evaluations import EvaluationStore
from gateway.telemetry import semconv as sc
from judges.evaluation_jobs import item_jobs
from judges.evaluation_plan import PlannedTarget, prompt_variables, target_messages
from judges.queue.base import JobQueue, QueueUnavailable

logger = logging.getLogger("judges.evaluations")

ENQUEUE_BATCH: Final = 1000  # jobs per enqueue call (items x judges)
GENERATED_FLUSH_S: Final = 0.05
QUEUE_RETRY_S: Final = 1.0
OUTCOMES_FLUSH_S: Final = 0.1
ITEMS = metrics.counter(
    "gateway_evaluation_items_total",
    "Evaluation items finished by runs this process owns, by status: done, error (outputs not generated, or a "
    "judge recorded an error), cancelled (left unjudged by a cancel).",
    ("status",),
)
ENQUEUED = metrics.counter(
    "gateway_evaluation_jobs_enqueued_total", "Evaluation judge jobs this process put on the judge queue."
)

# LlmProxy.complete
Complete = Callable[..., Awaitable[Completion]]


@dataclass(eq=False)
class Run:
    """A run this process owns: its judges (name, pinned prompt version), target, and the verdicts already
    stored when it resumed (those jobs are not enqueued again)."""

    id: str
    judges: list[tuple[str, int | None]]
    target: PlannedTarget | None
    judged: set[tuple[int, str]] = field(default_factory=set)
    cancelled: bool = False  # stopped here: feed nothing more
    feeding: bool = True  # its items are still being enqueued (or their outputs generated)
    drain_until: float | None = None  # stopped: settle what its jobs in work write until then (monotonic)

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.judges]


class Outcomes:
    """Items' outcomes (status, error message) written in batches: one transaction per ``OUTCOMES_FLUSH_S``
    instead of one per item. One not yet written when the process stops leaves its item ``pending``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._pending: list[tuple[str, int, str, str | None]] = []
        self._lock = asyncio.Lock()

    def add(self, evaluation_id: str, item_index: int, status: str, error_message: str | None) -> None:
        self._pending.append((evaluation_id, item_index, status, error_message))

    async def flush(self) -> None:
        async with self._lock:
            batch, self._pending = self._pending, []
            if batch:
                try:
                    await asyncio.to_thread(set_item_statuses, self.engine, batch)
                except BaseException:
                    self._pending[:0] = batch  # written with the next flush
                    raise

    async def run(self) -> None:
        while True:
            await asyncio.sleep(OUTCOMES_FLUSH_S)
            try:
                await self.flush()
            except Exception as exc:  # the store: the next flush tries again with what came since
                logger.error("Could not write evaluation item outcomes: %s", first_line(exc))


class Feeder:
    """Puts runs' items on the judge queue, generating the outputs a target must produce first."""

    def __init__(
        self,
        store: EvaluationStore,
        queue: JobQueue,
        complete: Complete,
        outcomes: Outcomes,
        *,
        concurrency: int,
        call_timeout_s: float | None,
    ) -> None:
        self.store = store
        self.queue = queue
        self.complete = complete
        self.outcomes = outcomes
        self.concurrency = max(1, concurrency)
        self.call_timeout_s = call_timeout_s
        self._calls = asyncio.Semaphore(self.concurrency)  # target calls in flight, every run together

    async def feed(self, run: Run, items: Sequence[tuple[int, bool]]) -> None:
        """Enqueue the jobs of ``items`` (``(item_index, needs_outputs)``, all ``pending``): first those that
        have their outputs, in batches, then the others as their outputs are generated."""
        direct = [index for index, needs in items if not needs or run.target is None]
        generated = [index for index, needs in items if needs and run.target is not None]
        per_batch = max(1, ENQUEUE_BATCH // max(1, len(run.judges)))
        for start in range(0, len(direct), per_batch):
            if run.cancelled:
                return
            await self.enqueue(run, direct[start : start + per_batch])
        if generated and not run.cancelled:
            await self._generate_all(run, generated)

    async def enqueue(self, run: Run, indexes: Sequence[int]) -> None:
        """The items' jobs on the queue (retried while it is unreachable), then the items ``queued``."""
        if not indexes:
            return
        jobs = item_jobs(run.id, indexes, run.judges, judged=run.judged)
        while jobs:
            try:
                await self.queue.enqueue(jobs)
                break
            except QueueUnavailable as exc:
                if run.cancelled:
                    return
                logger.warning("Evaluation %s: the judge queue is unavailable (%s); retrying in %g s",
                               run.id, first_line(exc), QUEUE_RETRY_S)  # fmt: skip
                await asyncio.sleep(QUEUE_RETRY_S)
        ENQUEUED.inc((), len(jobs))
        # Every (item, judge) already judged: the item is queued anyway, and settled at the next poll.
        await asyncio.to_thread(set_item_statuses, self.store.engine, [(run.id, i, "queued", None) for i in indexes])

    async def _generate_all(self, run: Run, indexes: list[int]) -> None:
        ready: list[int] = []
        remaining = iter(indexes)

        async def generate() -> None:
            for index in remaining:
                if run.cancelled:
                    return
                async with self._calls:
                    if run.cancelled:
                        return
                    try:
                        error = await self._generate(run, index)
                    except Exception as exc:  # a bug or the store: the item says so, the run goes on
                        logger.exception("Evaluation %s item %d: generating its outputs failed", run.id, index)
                        error = f"Internal error: {first_line(exc)}"
                if error is None:
                    ready.append(index)
                else:
                    ITEMS.inc(("error",))
                    self.outcomes.add(run.id, index, "error", error)

        async def flush() -> None:
            batch = ready[:]
            del ready[:]
            await self.enqueue(run, batch)

        workers = [asyncio.create_task(generate()) for _ in range(min(self.concurrency, len(indexes)))]
        try:
            while not all(worker.done() for worker in workers):
                await asyncio.wait(workers, timeout=GENERATED_FLUSH_S)
                await flush()
            await flush()
        finally:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    async def _generate(self, run: Run, index: int) -> str | None:
        """The item's outputs through the run's target, stored on the item (with the call's trace, span,
        prompt version and model); the error message when there are none."""
        target = run.target
        assert target is not None
        item = await asyncio.to_thread(self.store.item, run.id, index)
        if item is None:
            return f"Item {index} of evaluation {run.id} is gone."
        body: dict[str, Any] = {"model": target.route}
        if target.pinned_ref is not None:
            body["prompt"] = {"ref": target.pinned_ref, "variables": prompt_variables(item["inputs"]) or {}}
        else:
            body["messages"] = target_messages(item["inputs"])
        try:
            completion = await self.complete(
                body, attributes={sc.GATEWAY_EVALUATION_ID: run.id}, timeout_s=self.call_timeout_s
            )
        except ProxyError as exc:
            return f"The target route {target.route!r} failed (HTTP {exc.status}): {exc.message}"
        values = {
            "outputs": completion.text,
            "trace_id": completion.trace_id,
            "span_id": completion.span_id,
            "prompt_name": target.prompt_name,
            "prompt_version": target.prompt_version,
            "model": completion.response_model or completion.target.rsplit(" ", 1)[-1],
        }
        await asyncio.to_thread(self.store.update_item, run.id, index, **values)
        if completion.text is None:
            return f"The target route {target.route!r} answered without text (trace {completion.trace_id})."
        return None
