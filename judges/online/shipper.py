"""The shipper: a background task that carries the buffered online jobs to the judge queue in batches.

Every ``flush_interval_s`` it takes up to ``batch_size`` jobs at a time from the :class:`JobBuffer` and
``await queue.enqueue(batch)``, each call bounded by ``enqueue_timeout_s`` (a stalled Redis, a socket that
accepts and never answers, costs that long, never more). A batch the queue refuses (``QueueUnavailable``)
or does not take in time is tried once more after ``retry_delay_s``, then dropped and counted
(``queue_unavailable``); meanwhile new jobs wait in the buffer up to its capacity and further ones are
dropped there (``buffer_full``). Memory stays bounded by the buffer plus the one batch in hand, and a
client never waits on any of it: requests only append to the buffer.

An outage is logged once when it starts and once when it ends (with the number of jobs dropped).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter

from gateway.error_text import first_line
from judges.online import metrics
from judges.online.buffer import JobBuffer
from judges.queue.base import JobQueue, JobsRefused, QueueUnavailable
from judges.queue.jobs import JudgeJob

logger = logging.getLogger("judges.online")

DEFAULT_RETRY_DELAY_S = 0.5


class JobShipper:
    """Ships ``buffer``'s jobs to ``queue``; :meth:`run` until cancelled, :meth:`close` at shutdown."""

    def __init__(
        self,
        buffer: JobBuffer,
        queue: JobQueue,
        *,
        batch_size: int,
        flush_interval_s: float,
        enqueue_timeout_s: float,
        retry_delay_s: float = DEFAULT_RETRY_DELAY_S,
    ) -> None:
        if batch_size < 1 or not flush_interval_s > 0 or not enqueue_timeout_s > 0 or retry_delay_s < 0:
            raise ValueError(
                "batch_size must be >= 1, flush_interval_s and enqueue_timeout_s > 0, retry_delay_s >= 0; got "
                f"{batch_size}, {flush_interval_s}, {enqueue_timeout_s}, {retry_delay_s}"
            )
        self.buffer = buffer
        self.queue = queue
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.enqueue_timeout_s = enqueue_timeout_s
        self.retry_delay_s = retry_delay_s
        self._outage_since: float | None = None
        self._dropped_in_outage = 0

    async def run(self) -> None:
        """Ship what is buffered every ``flush_interval_s``, until cancelled."""
        while True:
            await asyncio.sleep(self.flush_interval_s)
            await self.ship_buffered()

    async def ship_buffered(self) -> None:
        """Ship every job buffered now, batch by batch (jobs appended meanwhile go too)."""
        while batch := self.buffer.take(self.batch_size):
            try:
                await self.ship(batch)
            except asyncio.CancelledError:  # stopped with this batch in hand: lost, and counted
                metrics.JOBS_DROPPED.inc((metrics.SHUTDOWN,), len(batch))
                raise

    async def ship(self, batch: list[JudgeJob]) -> bool:
        """Enqueue one batch, trying once more after ``retry_delay_s``; dropped and counted when both
        attempts fail. True when the queue took it."""
        for attempt in (1, 2):
            try:
                await asyncio.wait_for(self.queue.enqueue(batch), self.enqueue_timeout_s)
            except (QueueUnavailable, TimeoutError) as exc:
                reason = metrics.QUEUE_UNAVAILABLE
                error = f"no answer within {self.enqueue_timeout_s:g} s" if isinstance(exc, TimeoutError) else exc
                if attempt == 1:
                    self._note_outage(error)
                    await asyncio.sleep(self.retry_delay_s)
                    continue
            except JobsRefused as exc:  # a judge's storage refused its jobs (its judge paused): only those are lost
                logger.exception("The judge queue refused %d of %d online job(s)", len(exc.jobs), len(batch))
                self._note_recovered()
                refused = {id(job) for job in exc.jobs}
                for judge, count in Counter(job.judge for job in batch if id(job) not in refused).items():
                    metrics.JOBS_ENQUEUED.inc((judge,), count)
                metrics.JOBS_DROPPED.inc((metrics.QUEUE_ERROR,), len(exc.jobs))
                return False
            except Exception:  # a queue bug: the jobs are lost, the shipper goes on
                logger.exception("The judge queue raised while enqueueing %d online job(s); dropping them", len(batch))
                reason = metrics.QUEUE_ERROR
            else:
                self._note_recovered()
                for judge, count in Counter(job.judge for job in batch).items():
                    metrics.JOBS_ENQUEUED.inc((judge,), count)
                return True
            metrics.JOBS_DROPPED.inc((reason,), len(batch))
            self._dropped_in_outage += len(batch)
            return False
        raise AssertionError("unreachable")  # pragma: no cover

    async def close(self, timeout_s: float) -> None:
        """At shutdown: ship what is buffered for at most ``timeout_s``; what is left is dropped (``shutdown``)."""
        try:
            await asyncio.wait_for(self.ship_buffered(), timeout_s)
        except TimeoutError:
            logger.warning("Online judge jobs not all queued within %.1f s at shutdown; dropping the rest", timeout_s)
        left = self.buffer.clear()
        if left:
            metrics.JOBS_DROPPED.inc((metrics.SHUTDOWN,), left)

    def _note_outage(self, error: object) -> None:
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            self._dropped_in_outage = 0
            logger.warning(
                "Judge queue unavailable; online jobs wait in memory (up to %d) and batches failing twice are "
                "dropped (gateway_judge_jobs_dropped_total): %s",
                self.buffer.capacity,
                first_line(error) if isinstance(error, BaseException) else error,
            )

    def _note_recovered(self) -> None:
        if self._outage_since is None:
            return
        logger.warning(
            "Judge queue reachable again after %.1f s; %d online job(s) were dropped meanwhile (not counting "
            "buffer_full)",
            time.monotonic() - self._outage_since,
            self._dropped_in_outage,
        )
        self._outage_since = None
