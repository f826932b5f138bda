"""Evaluation runs on an in-process queue: a dataset, or stored LLM calls, graded by judges, the outputs
generated first through a route (and a prompt version) when the items have none.

One :class:`EvaluationService` per worker process (built in gateway/app.py's lifespan). A run is planned
(judges/evaluation_plan.py), stored ``queued`` with its items (gateway/store/evaluations.py), then fed item by
item into one bounded queue that ``judges.concurrency`` worker tasks drain: at most that many items are in
work at once in this process, whatever the number of runs; the judge runner also bounds the calls per route.
An item's job generates its outputs when it has none (``LlmProxy.complete``, its own trace, tagged with
``gateway.evaluation.id``; the outputs, the call's trace and span, the prompt version and the model are stored
on the item before any judge runs, so a resumed job judges the same outputs), then runs its judges
concurrently; the judge runner writes each assessment itself, insert-if-absent under a deterministic id.
The item's outcome (``done``, or ``error`` with what went wrong) is written in batches (``_Outcomes``), and a
run polled without its items is read from its outline: per item, a SQLite commit cost about as much as the
judge call (docs/benchmarks.md, "LLM judges").

Cancelling (``DELETE``) marks the run ``cancelled`` in the store at once: its items not yet started are
dropped (they stay ``pending``), the ones in work finish. The worker that owns a run notices a cancel
made on another worker within ``CANCEL_POLL_S``.

A process that stops leaves its runs ``queued`` or ``running``: every worker looks for them when it starts
and takes each one it wins (gateway/store/evaluation_runs.py, a compare-and-set, so of several workers one
resumes a run). A resumed run skips the items already finished and, in the others, the judges that already
wrote a verdict; a job interrupted between its call and its write runs again and the deterministic id leaves
one assessment. The queue is in memory: what the next issue's durable queue adds is resuming while the
process that owned the run is still alive elsewhere (a replica restarting next to one that is running a run
would run it too: no second assessment, but calls made twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

from sqlalchemy.engine import Engine

from gateway import metrics
from gateway.config import Settings
from gateway.error_text import first_line
from gateway.errors import GatewayError, NotFound
from gateway.llm.completion import Completion
from gateway.llm.errors import ProxyError
from gateway.llm.proxy import LlmProxy
from gateway.store.assessments import LLM_JUDGE, AssessmentStore
from gateway.store.evaluation_runs import (
    claim_run,
    finish_run,
    run_outline,
    run_status,
    set_item_statuses,
    unfinished_runs,
)
from gateway.store.evaluations import EvaluationStore
from gateway.store.traces import TraceStore
from gateway.telemetry import semconv as sc
from judges.api import JudgesState
from judges.definitions import Judge
from judges.evaluation_plan import JudgeResolver, PlannedTarget, Planner, prompt_variables, target_messages
from judges.evaluation_request import EvaluationRequest, JudgeSpec
from judges.evaluation_results import run_summary, run_view
from judges.runner import JudgeRunner, Target

logger = logging.getLogger("judges.evaluations")

CANCEL_POLL_S: Final = 0.5
OUTCOMES_FLUSH_S: Final = 0.1
ITEMS = metrics.counter(
    "gateway_evaluation_items_total",
    "Evaluation items finished in this process, by status: done, error (outputs not generated, or a judge "
    "recorded an error), cancelled (dropped by a cancel before they started).",
    ("status",),
)
_DONE, _ERROR, _CANCELLED = ("done",), ("error",), ("cancelled",)

# LlmProxy.complete
Complete = Callable[..., Awaitable[Completion]]


class InvalidState(GatewayError):
    """The run is not in a state that allows this (cancelling a completed run)."""

    status = 409
    error_code = "INVALID_STATE"


@dataclass(eq=False)
class _Run:
    id: str
    judges: list[Judge]
    target: PlannedTarget | None
    judged: set[tuple[int, str]] = field(default_factory=set)  # (item, judge) with a verdict already (resumed)
    in_work: int = 0  # items queued or being judged
    feeding: bool = True
    cancelled: bool = False
    checked_at: float = 0.0


class _Outcomes:
    """Items' outcomes (status, error message), written in batches: one transaction per ``OUTCOMES_FLUSH_S``
    instead of one per item. An outcome not yet written when the process stops leaves its item ``pending``:
    resumed, its judges find their verdicts stored and make no call."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._pending: list[tuple[str, int, str, str | None]] = []
        self._lock = asyncio.Lock()

    def add(self, evaluation_id: str, item_index: int, status: str, error_message: str | None) -> None:
        self._pending.append((evaluation_id, item_index, status, error_message))

    async def flush(self) -> None:
        async with self._lock:  # a run's completion waits for a flush in progress, then writes what is left
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


class EvaluationService:
    """The worker's evaluation runs: create (or estimate), read, list, cancel; the queue and its workers."""

    def __init__(
        self,
        *,
        evaluations: EvaluationStore,
        assessments: AssessmentStore,
        planner: Planner,
        runner: JudgeRunner,
        complete: Complete,
        concurrency: int,
        call_timeout_s: float | None = None,
    ) -> None:
        self.store = evaluations
        self.assessments = assessments
        self.planner = planner
        self.runner = runner
        self.complete = complete
        self.concurrency = max(1, concurrency)
        self.call_timeout_s = call_timeout_s
        self._queue: asyncio.Queue[tuple[_Run, dict[str, Any]]] = asyncio.Queue(maxsize=2 * self.concurrency)
        self._runs: dict[str, _Run] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._workers: list[asyncio.Task[None]] = []
        self._outcomes = _Outcomes(evaluations.engine)

    # -- life cycle ---------------------------------------------------------------------------------

    async def start(self, *, resume: bool = True) -> None:
        """Start the queue's workers, then resume the runs a stopped process left (when ``resume``)."""
        self._workers = [
            asyncio.create_task(self._work(), name=f"evaluation-worker-{i}") for i in range(self.concurrency)
        ]
        self._spawn(self._outcomes.run(), "evaluation-outcomes")
        if resume:
            self._spawn(self._resume(), "evaluation-resume")

    async def close(self) -> None:
        """Stop feeding and working; the runs in progress stay ``running`` in the store (resumed at the next start)."""
        tasks = [*self._tasks, *self._workers]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):  # what finished is kept; else those items run again at the next start
            await self._outcomes.flush()
        self._runs.clear()

    def _spawn(self, coroutine: Awaitable[None], name: str) -> None:
        task = asyncio.ensure_future(coroutine)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the API ------------------------------------------------------------------------------------

    async def create(self, request: EvaluationRequest) -> dict[str, Any]:
        """Plan ``request``; a dry run answers the counts and the estimate, else the run is stored and queued."""
        plan = await asyncio.to_thread(self.planner.plan, request)
        if request.dry_run:
            return {"dry_run": True, **plan.summary(), "estimate": plan.estimate}
        evaluation_id = str(uuid.uuid4())
        await asyncio.to_thread(self.store.create, evaluation_id, plan.request, plan.items, len(plan.judges))
        run = _Run(evaluation_id, plan.judges, plan.target)
        self._runs[evaluation_id] = run
        self._spawn(self._feed(run, claimed=False), f"evaluation-feed-{evaluation_id}")
        logger.info("Evaluation %s: %d item(s), judges %s", evaluation_id, len(plan.items),
                    ", ".join(j.name for j in plan.judges))  # fmt: skip
        return {"id": evaluation_id, "status": "queued", **plan.summary(), "estimate": plan.estimate}

    async def view(self, evaluation_id: str, *, include_items: bool = True) -> dict[str, Any]:
        def read() -> dict[str, Any]:
            run = self._row(evaluation_id)
            if include_items:
                items, assessments = self.store.items(evaluation_id), self.assessments.for_evaluation(evaluation_id)
            else:  # progress and aggregates only (what a client polling the run reads): no contents, no texts
                items, assessments = run_outline(self.store.engine, evaluation_id)
            return run_view(run, items, assessments, include_items=include_items)

        return await asyncio.to_thread(read)

    async def list(self, limit: int, page_token: str | None) -> dict[str, Any]:
        runs, token = await asyncio.to_thread(self.store.list, limit, page_token)
        return {"evaluations": [run_summary(run) for run in runs], "next_page_token": token}

    async def cancel(self, evaluation_id: str) -> dict[str, Any]:
        """Cancel the run: idempotent on a cancelled run, 409 on one that completed or failed."""
        row = await asyncio.to_thread(self._row, evaluation_id)
        if row["status"] in ("completed", "failed"):
            raise InvalidState(f"Evaluation {evaluation_id} has already {row['status']}: nothing to cancel.")
        run = self._runs.get(evaluation_id)
        if run is not None:
            run.cancelled = True
        if row["status"] != "cancelled":
            await asyncio.to_thread(finish_run, self.store.engine, evaluation_id, "cancelled")
            logger.info("Evaluation %s cancelled", evaluation_id)
        return await self.view(evaluation_id, include_items=False)

    async def item(self, evaluation_id: str, item_index: int) -> dict[str, Any]:
        """An item of a run (NotFound naming what is missing)."""

        def read() -> dict[str, Any]:
            self._row(evaluation_id)
            for item in self.store.items(evaluation_id):
                if item["item_index"] == item_index:
                    return item
            raise NotFound(f"Evaluation {evaluation_id} has no item {item_index}.")

        return await asyncio.to_thread(read)

    def _row(self, evaluation_id: str) -> dict[str, Any]:
        row = self.store.get(evaluation_id)
        if row is None:
            raise NotFound(f"No evaluation {evaluation_id!r}.")
        return row

    # -- feeding and resuming -------------------------------------------------------------------------

    async def _resume(self) -> None:
        engine = self.store.engine
        try:
            unfinished = await asyncio.to_thread(unfinished_runs, engine)
        except Exception as exc:
            logger.error("Could not look for evaluation runs to resume: %s", first_line(exc))
            return
        for evaluation_id, status, started_at in unfinished:
            if evaluation_id in self._runs:
                continue
            try:
                if not await asyncio.to_thread(claim_run, engine, evaluation_id, status, started_at):
                    continue  # another worker took it
                run = await asyncio.to_thread(self._resumed, evaluation_id)
            except GatewayError as exc:  # a judge of the run no longer exists, ...
                logger.error("Evaluation %s cannot resume: %s", evaluation_id, exc.message)
                await asyncio.to_thread(finish_run, engine, evaluation_id, "failed", error_message=exc.message)
                continue
            except Exception as exc:
                logger.error("Evaluation %s cannot resume: %s", evaluation_id, first_line(exc))
                continue
            logger.info("Evaluation %s resumed (%d verdict(s) already stored)", evaluation_id, len(run.judged))
            self._runs[evaluation_id] = run
            self._spawn(self._feed(run, claimed=True), f"evaluation-feed-{evaluation_id}")

    def _resumed(self, evaluation_id: str) -> _Run:
        request = self._row(evaluation_id)["request"]
        judges = [
            self.planner.judges.resolve(
                JudgeSpec(j["name"], j.get("guidelines")), j.get("prompt_version"), f"judges[{i}]"
            )
            for i, j in enumerate(request["judges"])
        ]
        target = PlannedTarget.from_dict(request["target"]) if request.get("target") else None
        judged = {
            (a.item_index, a.name)
            for a in self.assessments.for_evaluation(evaluation_id)
            if a.source_type == LLM_JUDGE and a.item_index is not None
        }
        return _Run(evaluation_id, judges, target, judged)

    async def _feed(self, run: _Run, *, claimed: bool) -> None:
        """Put the run's pending items on the queue (waiting while it is full), then let the last job finish it."""
        try:
            if not claimed:
                await asyncio.to_thread(self.store.set_status, run.id, "running")
            items = await asyncio.to_thread(self.store.items, run.id)
            for item in items:
                if item["status"] != "pending":
                    continue
                if run.cancelled or await self._cancelled_elsewhere(run):
                    break
                run.in_work += 1
                await self._queue.put((run, item))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.exception("Evaluation %s failed while queueing its items", run.id)
            run.cancelled = True  # its queued jobs are dropped
            await asyncio.to_thread(finish_run, self.store.engine, run.id, "failed", error_message=first_line(exc))
        run.feeding = False
        if run.in_work == 0:
            await self._finish(run)

    async def _cancelled_elsewhere(self, run: _Run) -> bool:
        """Whether another worker cancelled the run (read from the store at most every CANCEL_POLL_S)."""
        now = time.monotonic()
        if now - run.checked_at >= CANCEL_POLL_S:
            run.checked_at = now
            if await asyncio.to_thread(run_status, self.store.engine, run.id) != "running":
                run.cancelled = True
        return run.cancelled

    async def _finish(self, run: _Run) -> None:
        self._runs.pop(run.id, None)
        await self._outcomes.flush()
        if not run.cancelled:
            await asyncio.to_thread(finish_run, self.store.engine, run.id, "completed")
            logger.info("Evaluation %s completed", run.id)

    # -- the jobs -----------------------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            run, item = await self._queue.get()
            try:
                if run.cancelled or await self._cancelled_elsewhere(run):
                    ITEMS.inc(_CANCELLED)
                else:
                    await self._job(run, item)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug or the store: the item says so, the run goes on
                logger.exception("Evaluation %s item %d failed", run.id, item["item_index"])
                ITEMS.inc(_ERROR)
                self._outcomes.add(run.id, item["item_index"], "error", f"Internal error: {first_line(exc)}")
            finally:
                run.in_work -= 1
            if run.in_work == 0 and not run.feeding:
                await self._finish(run)

    async def _job(self, run: _Run, item: dict[str, Any]) -> None:
        index = item["item_index"]
        if item["outputs"] is None and run.target is not None and item["trace_id"] is None:
            error = await self._generate(run, item)
            if error is not None:
                ITEMS.inc(_ERROR)
                self._outcomes.add(run.id, index, "error", error)
                return
        judges = [judge for judge in run.judges if (index, judge.name) not in run.judged]
        target = Target(item["trace_id"], item["span_id"], index)
        results = await asyncio.gather(
            *(self.runner.run(judge, item, target=target, evaluation_id=run.id) for judge in judges)
        )
        failed = [a for a in results if a.error_code is not None]
        if failed:
            first = failed[0]
            message = (
                f"{len(failed)} judge(s) recorded an error; {first.name}: {first.error_code}: {first.error_message}"
            )
            ITEMS.inc(_ERROR)
            self._outcomes.add(run.id, index, "error", message)
        else:
            ITEMS.inc(_DONE)
            self._outcomes.add(run.id, index, "done", None)

    async def _generate(self, run: _Run, item: dict[str, Any]) -> str | None:
        """The item's outputs through the run's target, stored on the item (with the call's trace, span,
        prompt version and model) and set in ``item``; the error message when there are none."""
        target = run.target
        assert target is not None
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
        await asyncio.to_thread(self.store.update_item, run.id, item["item_index"], **values)
        item.update(values)
        if completion.text is None:
            return f"The target route {target.route!r} answered without text (trace {completion.trace_id})."
        return None


async def start_evaluations(
    settings: Settings, judges: JudgesState, proxy: LlmProxy, traces: TraceStore, *, resume: bool = True
) -> EvaluationService:
    """At start (gateway.app's lifespan, after the judges): the worker's evaluation service over the judges'
    catalog and runner, this app's LLM proxy and the trace store; its queue started, and the runs a stopped
    process left resumed in the background (unless ``resume`` is False: ``gateway eval run`` embedded)."""
    planner = Planner(
        judges=JudgeResolver(judges.catalog, judges.routes),
        routes=settings.llm.routes,
        catalog=lambda: judges.catalog.cache.catalog,
        traces=traces,
        max_trace_items=settings.judges.max_trace_items,
    )
    service = EvaluationService(
        evaluations=EvaluationStore(judges.assessments.engine),
        assessments=judges.assessments,
        planner=planner,
        runner=judges.runner,
        complete=proxy.complete,
        concurrency=settings.judges.concurrency,
        call_timeout_s=settings.judges.call_timeout_s,
    )
    await service.start(resume=resume)
    return service
