"""JudgeWorker: claim jobs from a JobQueue, run each judge, ack once the assessment is committed.

One worker has up to ``concurrency`` jobs in hand. For each job: the judge is resolved (judges/catalog.py),
the item read (items.py), and ``JudgeRunner.judge_once(..., raise_failures=True)`` run; the job is acked
only after the assessment row is committed (or found: the assessment id is deterministic, so a job that
runs twice writes once, and a second judge call is counted as a duplicate).

Each job is a task of its own (a slow judge call holds only its job), but the jobs of one claim share their
round trips: their traces are read in one query, their assessment ids looked up in one, their assessments
inserted in one transaction, and their acks sent as one ``ack_many`` (``XACK`` with several ids), each
coalesced per turn of the event loop (judges/batching.py). A batch that fails fails each of its jobs,
which then go the way below, one by one.

What went wrong decides what happens to the job:

- **transient** (``JudgeCallDeferred``: 429, 5xx, timeouts, connection errors; the trace not stored yet;
  the store unreachable): back to the queue after an exponential backoff with jitter (``retry_base_s``
  doubled per retry of this job in this process, at most ``retry_max_s``), never sooner than the
  upstream's ``Retry-After``; no attempt used. A job older than ``max_job_age_s`` gets an error
  assessment instead (``expired``).
- **configuration** (``JudgeMisconfigured``: no route, unknown route, the route's upstream answering
  401/403/404; a judge that is gone or unusable): the judge is paused with the reason (every worker
  process sees it: the queue keeps pauses) and the job goes back, unchanged; ``resume`` lets them run.
- **anything else** (a bug, an item that cannot be read): one attempt used, retried after the backoff; at
  ``max_deliveries`` attempts, or delivered more than ``max_deliveries`` times (its workers kept dying
  on it), an error assessment is written and the job goes to the dead letters.

A reclaimer task (``reclaim_interval_s``) takes the jobs of dead workers, idle past ``min_idle_s``; it
first touches this worker's jobs in hand (their idle time reset, the delivery count left alone), so
that a job running longer than ``min_idle_s`` is not taken from a live worker. On
``stop``: no more claims; the jobs in hand get ``grace_s`` to finish, then are cancelled and stay pending
in the queue (another worker reclaims them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import OrderedDict
from typing import Final

from sqlalchemy.exc import OperationalError

from gateway.errors import GatewayError
from gateway.judge_queue_settings import JudgeQueueSettings
from judges.batching import Coalescer
from judges.queue.base import Delivery, JobQueue, QueueUnavailable
from judges.runner import DUPLICATE, EXISTING, JudgeCallDeferred, JudgeMisconfigured, JudgeRunner, RunResult
from judges.worker import metrics
from judges.worker.items import JobReader, NotJudged, NotReady

logger = logging.getLogger("judges.worker")

EXPIRED: Final = "expired"  # the error code of a job given up after max_job_age_s of transient failures
DEAD_LETTER: Final = "dead_letter"  # the error code of a job given up after max_deliveries
PAUSED_RETRY_S: Final = 1.0  # a job of a judge just paused goes back this soon (it waits for resume)
QUEUE_RETRY_S: Final = 1.0  # a worker that cannot reach the queue waits this long before trying again
# With jobs in hand and fewer than half its slots free, a worker waits up to this long for more to free up
# before it claims: one claim of many jobs (which share their round trips) instead of many claims of one.
CLAIM_GATHER_S: Final = 0.005
_TRACKED_JOBS: Final = 10_000  # transient retry counts kept per job id in this process (for the backoff)


class JudgeWorker:
    """Runs queued judge jobs until ``stop`` is set; one per process (its tasks share the runner)."""

    def __init__(
        self,
        queue: JobQueue,
        runner: JudgeRunner,
        reader: JobReader,
        settings: JudgeQueueSettings,
        *,
        consumer: str,
        concurrency: int = 8,
        grace_s: float = 10.0,
    ) -> None:
        self.queue = queue
        self.runner = runner
        self.reader = reader
        self.settings = settings
        self.consumer = consumer
        self.concurrency = concurrency
        self.grace_s = grace_s
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._retries: OrderedDict[str, int] = OrderedDict()  # job id -> transient retries in this process
        # (judge, ref) -> the delivery in hand: a ref is unique within one judge's queue only (two Redis streams
        # give the same entry ids to entries added in the same millisecond)
        self._in_hand: dict[tuple[str, str], Delivery] = {}
        self._ack: Coalescer[Delivery, None] = Coalescer(self._ack_many)
        self._finished = asyncio.Event()  # set when a job's task ends
        self._starters: set[asyncio.Task[None]] = set()  # reclaimed jobs waiting for slots

    async def _ack_many(self, deliveries: list[Delivery]) -> list[None]:
        await self.queue.ack_many(deliveries)
        return [None] * len(deliveries)

    async def run(self, stop: asyncio.Event) -> None:
        """Claim and run jobs until ``stop`` is set, then drain (``grace_s``) and return."""
        reclaimer = asyncio.create_task(self._reclaim_loop(stop), name="judge-reclaimer")
        try:
            while not stop.is_set():
                await self._slots.acquire()
                if stop.is_set():  # stopped while every slot was busy: claim nothing more
                    self._slots.release()
                    break
                await self._gather_free_slots()
                free = 1 + self._free_slots()
                try:
                    deliveries = await self.queue.claim(self.consumer, free, self.settings.claim_block_s)
                except QueueUnavailable as exc:
                    self._slots.release()
                    logger.warning("Judge worker %s: %s; retrying in %g s", self.consumer, exc, QUEUE_RETRY_S)
                    await _wait(stop, QUEUE_RETRY_S)
                    continue
                except Exception:  # a Redis error answer, a bug: never the end of the worker
                    self._slots.release()
                    logger.exception("Judge worker %s: claim failed; retrying in %g s", self.consumer, QUEUE_RETRY_S)
                    await _wait(stop, QUEUE_RETRY_S)
                    continue
                self._slots.release()
                for delivery in deliveries:
                    await self.submit(delivery)
        finally:
            helpers = [reclaimer, *self._starters]
            for helper in helpers:
                helper.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            await self._drain()

    def _free_slots(self) -> int:
        return max(0, self.concurrency - len(self._tasks) - 1)

    async def _gather_free_slots(self) -> None:
        """Wait (at most CLAIM_GATHER_S) while jobs are in hand and fewer than half the slots are free."""
        deadline = time.monotonic() + CLAIM_GATHER_S
        while self._tasks and 1 + self._free_slots() < self.concurrency // 2:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._finished.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._finished.wait(), left)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._finished.set()

    async def submit(self, delivery: Delivery) -> None:
        """Run ``delivery`` in a task when a slot is free (waits for one); not when it is in hand already."""
        if self._hold(delivery):
            await self._start(delivery)

    def _hold(self, delivery: Delivery) -> bool:
        """Take ``delivery`` in hand (touched from now on, even while it waits for a slot); False when it is
        in hand already."""
        key = _key(delivery)
        if key in self._in_hand:
            return False
        self._in_hand[key] = delivery
        return True

    async def _start_all(self, deliveries: list[Delivery]) -> None:
        for delivery in deliveries:
            await self._start(delivery)

    async def _start(self, delivery: Delivery) -> None:
        try:
            await self._slots.acquire()
        except BaseException:  # stopped while waiting: the job stays pending in the queue
            self._in_hand.pop(_key(delivery), None)
            raise
        task = asyncio.create_task(self._run_one(delivery), name=f"judge-job:{delivery.job.id}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    async def _drain(self) -> None:
        if not self._tasks:
            return
        logger.info("Judge worker %s: finishing %d job(s) in hand", self.consumer, len(self._tasks))
        _, pending = await asyncio.wait(set(self._tasks), timeout=self.grace_s)
        for task in pending:  # left pending in the queue: another worker reclaims them after min_idle_s
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _reclaim_loop(self, stop: asyncio.Event) -> None:
        """Every ``reclaim_interval_s`` (or a third of ``min_idle_s`` when that is shorter): touch the jobs
        in hand (so none of them looks abandoned), then take those of dead workers."""
        settings = self.settings
        interval = min(settings.reclaim_interval_s, settings.min_idle_s / 3)
        while not stop.is_set():
            await _wait(stop, interval)
            if stop.is_set():
                return
            if self._in_hand:
                try:
                    await self.queue.touch(self.consumer, list(self._in_hand.values()))
                except Exception as exc:
                    logger.warning("Judge worker %s: touching the jobs in hand failed: %s", self.consumer, exc)
            try:
                reclaimed = await self.queue.reclaim(self.consumer, settings.min_idle_s, settings.max_deliveries)
            except QueueUnavailable as exc:
                logger.warning("Judge worker %s: reclaim failed: %s", self.consumer, exc)
                continue
            except Exception:
                logger.exception("Judge worker %s: reclaim failed", self.consumer)
                continue
            if reclaimed:
                logger.info("Judge worker %s: reclaimed %d job(s) of stopped workers", self.consumer, len(reclaimed))
            # Started from their own task: waiting here for free slots would stop the touches above, and a
            # large reclaim could then make this worker's own jobs look abandoned.
            held = [delivery for delivery in reclaimed if self._hold(delivery)]
            if held:
                starter = asyncio.create_task(self._start_all(held), name="judge-reclaimed")
                self._starters.add(starter)
                starter.add_done_callback(self._starters.discard)

    # -- one job ------------------------------------------------------------------------------------

    async def _run_one(self, delivery: Delivery) -> None:
        judge_name = delivery.job.judge
        labels = (judge_name,)
        metrics.RUNNING.inc(labels)
        metrics.WAIT.observe(labels, max(0.0, time.time() - delivery.job.enqueued_at))
        try:
            await self._handle(delivery)
        except QueueUnavailable as exc:  # the job stays pending: reclaimed once the queue is back
            logger.warning("Judge job %s left pending: %s", delivery.job.id, exc)
        except asyncio.CancelledError:
            raise
        except Exception:  # never lose the worker to one job; the job stays pending and is reclaimed
            logger.exception("Judge job %s: unexpected failure handling it", delivery.job.id)
        finally:
            metrics.RUNNING.dec(labels)
            self._in_hand.pop(_key(delivery), None)
            self._slots.release()

    async def _handle(self, delivery: Delivery) -> None:
        job = delivery.job
        settings = self.settings
        if delivery.deliveries > settings.max_deliveries or delivery.attempts >= settings.max_deliveries:
            reason = f"delivered {delivery.deliveries} time(s), {delivery.attempts} failed attempt(s)"
            await self._give_up(delivery, reason)
            return
        try:
            result = await self._judge(delivery)
        except NotJudged:
            await self._done(delivery, "skipped")
        except (NotReady, JudgeCallDeferred, OperationalError) as exc:
            await self._transient(delivery, exc)
        except JudgeMisconfigured as exc:
            await self._pause(delivery, f"{exc.code}: {exc.message}")
        except GatewayError as exc:  # NotFound, JudgeUnusable: no judge to run
            await self._pause(delivery, f"{exc.error_code}: {exc.message}")
        except Exception as exc:
            await self._failed(delivery, exc)
        else:
            outcome = {DUPLICATE: "duplicate", EXISTING: "existing"}.get(result.status, "written")
            if result.status == DUPLICATE:
                logger.info("Judge job %s: a duplicate judge call (another run wrote first)", job.id)
                metrics.DUPLICATE_CALLS.inc((job.judge, "concurrent"))
            elif result.calls and delivery.deliveries > 1:
                metrics.DUPLICATE_CALLS.inc((job.judge, "redelivered"))
            await self._done(delivery, outcome)

    async def _judge(self, delivery: Delivery) -> RunResult:
        job = delivery.job
        judge = self.reader.judge(job)
        found = await self.reader.read(job, judge)
        return await self.runner.judge_once(
            found.judge, found.item, target=found.target, evaluation_id=found.evaluation_id, raise_failures=True
        )

    async def _done(self, delivery: Delivery, outcome: str) -> None:
        await self._ack(delivery)
        self._retries.pop(delivery.job.id, None)
        labels = (delivery.job.judge,)
        metrics.JOBS.inc((delivery.job.judge, outcome))
        metrics.DONE.observe(labels, max(0.0, time.time() - delivery.job.enqueued_at))

    async def _transient(self, delivery: Delivery, exc: Exception) -> None:
        job = delivery.job
        age = time.time() - job.enqueued_at
        message = exc.message if isinstance(exc, JudgeCallDeferred) else str(exc).splitlines()[0]
        if age > self.settings.max_job_age_s:
            await self._record_error(delivery, EXPIRED, f"Given up after {age:.0f} s of retries: {message}")
            await self._done(delivery, EXPIRED)
            return
        retry_after = exc.retry_after_s if isinstance(exc, JudgeCallDeferred) else None
        delay = self._backoff(job.id, retry_after)
        reason = "not_ready" if isinstance(exc, NotReady) else "transient"
        logger.info("Judge job %s: %s; retrying in %.2f s (no attempt used)", job.id, message, delay)
        await self.queue.retry_later(delivery, delay, count_attempt=False)
        metrics.RETRIED.inc((job.judge, reason))

    async def _pause(self, delivery: Delivery, reason: str) -> None:
        judge = delivery.job.judge
        logger.warning("Judge %r paused: %s (its jobs stay queued until it is resumed)", judge, reason)
        await self.queue.pause(judge, reason)
        await self.queue.retry_later(delivery, PAUSED_RETRY_S, count_attempt=False)
        metrics.PAUSED.inc((judge,))

    async def _failed(self, delivery: Delivery, exc: Exception) -> None:
        job = delivery.job
        attempts = delivery.attempts + 1
        message = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")
        if attempts >= self.settings.max_deliveries:
            logger.error("Judge job %s failed %d time(s), last: %s", job.id, attempts, message)
            failed = Delivery(job, delivery.ref, delivery.deliveries, attempts)
            await self._give_up(failed, f"{attempts} failed attempt(s), last: {message}")
            return
        logger.warning("Judge job %s failed (attempt %d of %d): %s", job.id, attempts, self.settings.max_deliveries,
                       message, exc_info=exc)  # fmt: skip
        await self.queue.retry_later(delivery, self._backoff(job.id, None), count_attempt=True)
        metrics.RETRIED.inc((job.judge, "failed"))

    async def _give_up(self, delivery: Delivery, reason: str) -> None:
        """An error assessment (when the judge is known), then the dead letters."""
        await self._record_error(delivery, DEAD_LETTER, f"The job was given up: {reason}.")
        await self.queue.dead_letter(delivery, reason)
        self._retries.pop(delivery.job.id, None)
        metrics.DEAD_LETTERS.inc((delivery.job.judge,))

    async def _record_error(self, delivery: Delivery, code: str, message: str) -> None:
        job = delivery.job
        try:
            judge = self.reader.judge(job)
        except GatewayError as exc:
            logger.error("Judge job %s: no error assessment (no judge %r: %s)", job.id, job.judge, exc.message)
            return
        await self.runner.record_error(
            judge, target=self.reader.target(job), evaluation_id=job.evaluation_id, code=code, message=message
        )

    def _backoff(self, job_id: str, retry_after_s: float | None) -> float:
        """``retry_base_s`` * 2^(retries of this job here), at most ``retry_max_s``, with full jitter over
        its upper half; never below the upstream's Retry-After."""
        retries = self._retries.pop(job_id, 0)
        self._retries[job_id] = retries + 1
        while len(self._retries) > _TRACKED_JOBS:
            self._retries.popitem(last=False)
        settings = self.settings
        ceiling = min(settings.retry_max_s, settings.retry_base_s * 2**retries)
        delay = random.uniform(ceiling / 2, ceiling)
        return max(delay, retry_after_s or 0.0)


def _key(delivery: Delivery) -> tuple[str, str]:
    return delivery.job.judge, delivery.ref


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds``, or less when ``stop`` is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
