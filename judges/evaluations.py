"""Evaluation runs: a dataset, or stored LLM calls (a backfill over a trace filter), graded by judges through
the judge queue, the outputs generated first through a route (and a prompt version) when the items have none.

One :class:`EvaluationService` per gateway worker process (built in gateway/app.py's lifespan). A run is
planned (judges/evaluation_plan.py; a ``dry_run`` answers the counts and the cost estimate there, with nothing
stored or enqueued), stored ``queued`` with its items (gateway/store/evaluations.py), and owned by the process
that created it, which:

- feeds it (judges/evaluation_feed.py): one judge job per (item, judge), kind ``evaluation``, the judge's
  prompt version pinned from the plan, on the process's judge queue (judges/queue/choice.py: Redis Streams
  with ``redis_url``, else the store's table) in batches; each batch's items marked ``queued``. Outputs a
  target must generate are generated here first (at most ``judges.concurrency`` calls at once) and their
  jobs enqueued right after. The jobs are run by whichever judge workers take from that queue: the
  gateways' embedded ones, or ``gateway judges worker`` processes (``judges.workers: external``), so a
  backfill of 10,000 stored traces is spread over all of them; each worker judges a job with the run's own
  judge (its pinned version and guidelines; judges/evaluation_jobs.py) and writes the assessment
  insert-if-absent under a deterministic id, so a job that runs twice leaves one verdict.
- settles it: every ``SETTLE_INTERVAL_S`` one set-based pass per run (gateway/store/evaluation_runs.py's
  ``settle_items``) finishes the ``queued`` items whose judges have all written, ``done``, or ``error``
  when a verdict is an error (the message names how many and the first one), in one transaction; the run
  is ``completed`` once no item is ``pending`` or ``queued``. An item whose outputs could not be generated
  ends ``error`` at once. Nothing here waits on the workers: they may be other processes or machines.

Cancelling (``DELETE``) marks the run ``cancelled`` in the store at once: this process feeds nothing more, and
the workers ack its queued jobs without a judge call (they read the run's status at most every 0.5 s); the
jobs already in work finish, and their items are settled for a while after (``2 * judges.call_timeout_s``
+ 5 s without news), then the items left ``queued`` go back to ``pending``. A run that fails while being fed
ends ``failed`` the same way. A run polled without its items is read from its outline.

Ownership is a lease (gateway/store/evaluation_runs.py): the run's owner (this service's random ``owner`` id)
and heartbeat, set from the run's insert and renewed at each settle pass (one statement for all the process's
runs). A process that stops leaves its runs ``queued`` or ``running`` (released, when it stops cleanly). Every
gateway worker, when it starts and every ``CLAIM_INTERVAL_S`` while it runs, takes the unfinished runs whose
heartbeat is older than ``LEASE_TIMEOUT_S`` (or unset: released, or stored before the leases), each with a
compare-and-set on its owner and heartbeat, so of several workers one resumes a run and a live owner keeps
its own; the winner owns it from then on. So a run whose owner dies is resumed by a running replica within
about ``LEASE_TIMEOUT_S + CLAIM_INTERVAL_S``, and a restarting replica takes no live replica's run. A
resumed run enqueues only its ``pending`` items (those whose jobs were never enqueued), skipping the (item,
judge) pairs that already have a verdict, and settles the ``queued`` ones as their jobs, still on the
durable queue, are done (the queue's jobs keep running while the run has no owner). An owner that finds at
a renewal its run held by another process (it stalled past the lease timeout) stops feeding and settling it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Final

from gateway.config import Settings
from gateway.error_text import first_line
from gateway.errors import GatewayError, NotFound
from gateway.llm.proxy import LlmProxy
from gateway.store.assessments import AssessmentStore, now_ms
from gateway.store.evaluation_runs import (
    claim_run,
    claimable_runs,
    finish_run,
    item_states,
    judged_pairs,
    release_leases,
    renew_leases,
    requeue_items,
    run_outline,
    settle_items,
)
from gateway.store.evaluations import EvaluationStore
from gateway.store.traces import TraceStore
from judges.api import JudgesState
from judges.evaluation_feed import ITEMS, Complete, Feeder, Outcomes, Run
from judges.evaluation_plan import JudgeResolver, PlannedTarget, Planner
from judges.evaluation_request import EvaluationRequest, JudgeSpec
from judges.evaluation_results import run_summary, run_view
from judges.queue.base import JobQueue

logger = logging.getLogger("judges.evaluations")

SETTLE_INTERVAL_S: Final = 0.5  # also how often an owner renews its runs' leases
DRAIN_MARGIN_S: Final = 5.0
# A run whose owner has not renewed its lease for this long is taken over by another process: well above the
# renewal interval (a settle pass, under a slow store), well below the wait for a dead owner's runs.
LEASE_TIMEOUT_S: Final = 10.0
CLAIM_INTERVAL_S: Final = 2.0  # how often a running process looks for runs whose lease expired


@dataclass(frozen=True, slots=True)
class RunLease:
    """The owner lease's timings: ``timeout_s`` without a renewal and a run is another process's to take;
    every ``claim_interval_s`` this process looks for such runs (the defaults suit production; tests shorten
    them)."""

    timeout_s: float = LEASE_TIMEOUT_S
    claim_interval_s: float = CLAIM_INTERVAL_S

    def __post_init__(self) -> None:
        if self.timeout_s < 4 * SETTLE_INTERVAL_S:
            raise ValueError(
                f"lease timeout_s must be at least 4 settle intervals ({4 * SETTLE_INTERVAL_S} s), got "
                f"{self.timeout_s}: a live owner renews once per interval."
            )
        if self.claim_interval_s <= 0:
            raise ValueError(f"lease claim_interval_s must be positive, got {self.claim_interval_s}.")


DEFAULT_LEASE: Final = RunLease()


def owner_id() -> str:
    """A new owner id: the host and pid (what an operator looks for) and a random part (unique per service)."""
    return f"{socket.gethostname()[:200]}/{os.getpid()}/{secrets.token_hex(6)}"


class InvalidState(GatewayError):
    """The run is not in a state that allows this (cancelling a completed run)."""

    status = 409
    error_code = "INVALID_STATE"


class EvaluationService:
    """The process's evaluation runs: create (or estimate), read, list, cancel; feeding and settling its own."""

    def __init__(
        self,
        *,
        evaluations: EvaluationStore,
        assessments: AssessmentStore,
        planner: Planner,
        queue: JobQueue,
        complete: Complete,
        concurrency: int,
        call_timeout_s: float = 60.0,
        lease: RunLease = DEFAULT_LEASE,
    ) -> None:
        self.store = evaluations
        self.owner = owner_id()
        self.lease = lease
        self.assessments = assessments
        self.planner = planner
        self.queue = queue
        self.drain_s = 2 * call_timeout_s + DRAIN_MARGIN_S
        self._runs: dict[str, Run] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._outcomes = Outcomes(evaluations.engine)
        self.feeder = Feeder(evaluations, queue, complete, self._outcomes, concurrency=concurrency,
                             call_timeout_s=call_timeout_s)  # fmt: skip

    # -- life cycle ---------------------------------------------------------------------------------

    async def start(self, *, resume: bool = True) -> None:
        """Start settling (and writing outcomes, and renewing this process's leases), then resume the runs a
        stopped process left, now and every ``lease.claim_interval_s`` (when ``resume``)."""
        self._spawn(self._outcomes.run(), "evaluation-outcomes")
        self._spawn(self._settle_loop(), "evaluation-settle")
        if resume:
            self._spawn(self._claim_loop(), "evaluation-claim")

    async def close(self) -> None:
        """Stop feeding and settling; the runs in progress stay ``running`` in the store, their leases released
        (another process resumes them at its next claim), and their jobs on the queue."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):  # what finished is kept; else those items run again at the next start
            await self._outcomes.flush()
        self._runs.clear()
        try:
            await asyncio.to_thread(release_leases, self.store.engine, self.owner)
        except Exception as exc:  # the store: the runs are taken once their lease expires
            logger.warning("Could not release this process's evaluation runs: %s", first_line(exc))

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
        await asyncio.to_thread(
            self.store.create, evaluation_id, plan.request, plan.items, len(plan.judges), owner=self.owner
        )
        run = Run(evaluation_id, [(j.name, j.prompt_version) for j in plan.judges], plan.target)
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

    async def _claim_loop(self) -> None:
        while True:
            await self._resume()
            await asyncio.sleep(self.lease.claim_interval_s)

    async def _resume(self) -> None:
        """Take and resume the unfinished runs whose lease expired (their owner stopped), those this process wins."""
        engine = self.store.engine
        try:
            expired_before = now_ms() - round(self.lease.timeout_s * 1000)
            claimable = await asyncio.to_thread(claimable_runs, engine, expired_before)
        except Exception as exc:
            logger.error("Could not look for evaluation runs to resume: %s", first_line(exc))
            return
        for found in claimable:
            evaluation_id = found.id
            if evaluation_id in self._runs:
                continue
            try:
                claimed = await asyncio.to_thread(
                    claim_run, engine, evaluation_id, found.status, found.started_at, owner=self.owner,
                    lease=found.lease,
                )  # fmt: skip
                if not claimed:
                    continue  # another worker took it (or its owner renewed it)
                run = await asyncio.to_thread(self._resumed, evaluation_id)
            except GatewayError as exc:  # a judge of the run no longer exists, ...
                logger.error("Evaluation %s cannot resume: %s", evaluation_id, exc.message)
                await asyncio.to_thread(finish_run, engine, evaluation_id, "failed", error_message=exc.message)
                continue
            except Exception as exc:
                logger.error("Evaluation %s cannot resume: %s", evaluation_id, first_line(exc))
                continue
            logger.info("Evaluation %s resumed (%d verdict(s) already stored; previous owner %s)", evaluation_id,
                        len(run.judged), found.lease.owner or "none")  # fmt: skip
            self._runs[evaluation_id] = run
            self._spawn(self._feed(run, claimed=True), f"evaluation-feed-{evaluation_id}")

    def _resumed(self, evaluation_id: str) -> Run:
        """The run as its stored request says, its judges checked against this gateway (a judge gone, or its
        route: the run fails, naming it)."""
        request = self._row(evaluation_id)["request"]
        judges = [
            self.planner.judges.resolve(
                JudgeSpec(j["name"], j.get("guidelines")), j.get("prompt_version"), f"judges[{i}]"
            )
            for i, j in enumerate(request["judges"])
        ]
        target = PlannedTarget.from_dict(request["target"]) if request.get("target") else None
        judged = judged_pairs(self.store.engine, evaluation_id)
        return Run(evaluation_id, [(j.name, j.prompt_version) for j in judges], target, judged)

    async def _feed(self, run: Run, *, claimed: bool) -> None:
        """Put the run's ``pending`` items on the judge queue; a failure fails the run."""
        try:
            if not claimed and not await asyncio.to_thread(
                claim_run, self.store.engine, run.id, "queued", None, owner=self.owner, lease=None
            ):
                run.cancelled = True  # cancelled before it started (or its lease taken already): not ours
                self._runs.pop(run.id, None)
                return
            states = await asyncio.to_thread(item_states, self.store.engine, run.id)
            await self.feeder.feed(run, [(index, needs) for index, status, needs in states if status == "pending"])
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.exception("Evaluation %s failed while queueing its items", run.id)
            if self._runs.get(run.id) is not run:
                return  # its lease was taken meanwhile: the run is its new owner's to feed (or fail)
            run.cancelled = True  # its queued jobs are dropped by the workers
            await asyncio.to_thread(finish_run, self.store.engine, run.id, "failed", error_message=first_line(exc))
        finally:
            run.feeding = False

    # -- settling -------------------------------------------------------------------------------------

    async def _settle_loop(self) -> None:
        while True:
            await asyncio.sleep(SETTLE_INTERVAL_S)
            try:
                await self._renew()
            except Exception as exc:  # the store: the next pass tries again (the lease holds for a while)
                logger.error("Could not renew the leases of this process's evaluation runs: %s", first_line(exc))
            for run in list(self._runs.values()):
                try:
                    await self._settle(run)
                except Exception as exc:  # the store: the next pass tries again
                    logger.error("Evaluation %s: settling its items failed: %s", run.id, first_line(exc))

    async def _renew(self) -> None:
        """Renew this process's lease on its runs (one statement); a run another process holds now is dropped:
        nothing more fed or settled here."""
        if not self._runs:
            return
        taken = await asyncio.to_thread(renew_leases, self.store.engine, self.owner, list(self._runs))
        for evaluation_id, holder in taken.items():
            run = self._runs.pop(evaluation_id, None)
            if run is not None:
                run.cancelled = True  # the feeder stops; the new owner feeds the items still pending
                logger.warning("Evaluation %s: its lease was taken by %s (this process %s stalled past %g s); "
                               "it stops feeding and settling the run", evaluation_id, holder or "no owner",
                               self.owner, self.lease.timeout_s)  # fmt: skip

    async def _settle(self, run: Run) -> None:
        """One pass: the run's items whose judges have all written are finished; the run completed when none
        is left; a stopped run drained (settled while its jobs in work write, then its queued items pending)."""
        engine = self.store.engine
        settled = await asyncio.to_thread(settle_items, engine, run.id, run.names)
        if settled.done:
            ITEMS.inc(("done",), settled.done)
        if settled.errors:
            ITEMS.inc(("error",), settled.errors)
        if settled.status is None:  # the run is gone from the store
            self._runs.pop(run.id, None)
            return
        if settled.status in ("cancelled", "failed"):
            run.cancelled = True
            now = time.monotonic()
            if run.drain_until is None or settled.done or settled.errors:
                run.drain_until = now + self.drain_s
            if not run.feeding and (settled.queued == 0 or now >= run.drain_until):
                self._runs.pop(run.id, None)
                dropped = await asyncio.to_thread(requeue_items, engine, run.id)
                if dropped:
                    ITEMS.inc(("cancelled",), dropped)
                logger.info("Evaluation %s %s: %d item(s) left unjudged", run.id, settled.status, dropped)
            return
        if settled.remaining == 0:
            self._runs.pop(run.id, None)
            await self._outcomes.flush()
            if await asyncio.to_thread(finish_run, engine, run.id, "completed"):
                logger.info("Evaluation %s completed", run.id)


async def start_evaluations(
    settings: Settings,
    judges: JudgesState,
    proxy: LlmProxy,
    traces: TraceStore,
    queue: JobQueue,
    *,
    resume: bool = True,
    lease: RunLease = DEFAULT_LEASE,
) -> EvaluationService:
    """At start (gateway.app's lifespan, after the judges and the judge queue): the process's evaluation
    service over the judges' catalog, this app's LLM proxy (the targets' calls), the trace store and the
    judge ``queue``; settling started, and the runs a stopped process left resumed in the background (unless
    ``resume`` is False: ``gateway eval run`` embedded); ``lease``: the owner lease's timings."""
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
        queue=queue,
        complete=proxy.complete,
        concurrency=settings.judges.concurrency,
        call_timeout_s=settings.judges.call_timeout_s,
        lease=lease,
    )
    await service.start(resume=resume)
    return service
