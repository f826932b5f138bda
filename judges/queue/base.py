"""The interface of a judge job queue, kept by both backends: Redis Streams (redis_streams.py, when
``redis_url`` is set) and the in-process SQLite queue (local.py, the embedded default).

Delivery is at least once: a job is handed to one consumer, and stays pending until that consumer acks
it (after the assessment row is committed) or asks for it later. A consumer that dies leaves its jobs
pending; ``reclaim`` hands jobs idle past ``min_idle_s`` to a live consumer, with ``deliveries`` counted,
and a job delivered more than ``max_deliveries`` times goes to the dead letters instead. The assessment's
deterministic id makes a job that runs twice write once (the second run is counted as a duplicate call
when it called the judge again).

Failures the queue does not decide: the worker (judges/worker.py) classifies what went wrong and calls
``retry_later`` (transient: no attempt used, bounded by the job's age), ``dead_letter`` (poison), or
``pause`` (configuration: the judge's jobs stay queued until ``resume``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Protocol

from judges.queue.jobs import JudgeJob


class QueueUnavailable(Exception):
    """The queue's backend cannot be reached (Redis down or stalled): the caller counts and drops, or
    retries; never raised for a job's own content."""


class JobsRefused(Exception):
    """Some jobs of an enqueue were refused for their judge (on Redis, a key of that judge that is not a
    stream): those in ``jobs`` were not queued, the others were; the judge is paused, with why."""

    def __init__(self, jobs: Sequence[JudgeJob], message: str) -> None:
        super().__init__(message)
        self.jobs = list(jobs)


@dataclasses.dataclass(frozen=True, slots=True)
class Delivery:
    """A job handed to a consumer: ``ref`` is the backend's handle (a stream entry id, a row id),
    ``deliveries`` how many times it has been handed out (1 the first time), ``attempts`` how many
    times running it failed in a way that counts (transient failures do not)."""

    job: JudgeJob
    ref: str
    deliveries: int
    attempts: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class JudgeQueueStats:
    """One judge's queue: ``depth`` jobs not yet acked (waiting, delayed or in hand), ``pending`` handed
    out and not acked, ``delayed`` waiting for a retry time, ``oldest_age_s`` the age of the oldest job
    not yet acked (0 when none), ``dead_letters`` in the dead-letter store, ``paused`` the reason or None."""

    judge: str
    depth: int
    pending: int
    delayed: int
    oldest_age_s: float
    dead_letters: int
    paused: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """As ``GET /api/judges/queue`` and ``gateway judges queue --json`` show it."""
        return {
            "judge": self.judge,
            "depth": self.depth,
            "pending": self.pending,
            "delayed": self.delayed,
            "oldest_age_s": round(self.oldest_age_s, 3),
            "dead_letters": self.dead_letters,
            "paused": self.paused,
        }


class JobQueue(Protocol):
    """A judge job queue. Every method raises :class:`QueueUnavailable` when the backend cannot be
    reached."""

    @property
    def kind(self) -> str:
        """The backend's name in logs and answers: ``redis`` or ``store``."""

    async def enqueue(self, jobs: Sequence[JudgeJob]) -> None:
        """Append the jobs (one round trip for the batch where the backend allows); :class:`JobsRefused`
        names those a judge's broken storage refused (the others are queued)."""

    async def claim(self, consumer: str, count: int, block_s: float) -> list[Delivery]:
        """Up to ``count`` jobs for ``consumer`` from the judges that are not paused, waiting up to
        ``block_s`` for the first one; due delayed retries are moved back first."""

    async def ack(self, delivery: Delivery) -> None:
        """The job is done: its assessment is committed."""

    async def ack_many(self, deliveries: Sequence[Delivery]) -> None:
        """``ack`` for each (one round trip per judge where the backend allows)."""

    async def retry_later(self, delivery: Delivery, delay_s: float, *, count_attempt: bool) -> None:
        """Hand the job out again after ``delay_s`` (atomically: it is never in neither place);
        ``count_attempt`` adds one to its attempts (a failure that counts)."""

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Move the job to the dead letters with ``reason`` and its delivery and attempt counts."""

    async def reclaim(self, consumer: str, min_idle_s: float, max_deliveries: int) -> list[Delivery]:
        """Jobs handed out more than ``min_idle_s`` ago and not acked (their consumer died), now
        ``consumer``'s; those past ``max_deliveries`` are returned too, for the caller to dead-letter
        (it writes their error assessment first)."""

    async def touch(self, consumer: str, deliveries: Sequence[Delivery]) -> None:
        """``consumer`` still holds these jobs: their idle time starts again (a judge call longer than
        ``min_idle_s`` is not reclaimed from a live worker); those another consumer took are left alone."""

    async def pause(self, judge: str, reason: str) -> None:
        """Stop handing out ``judge``'s jobs (they stay queued), with the reason shown."""

    async def paused(self) -> dict[str, str]:
        """The paused judges, and why."""

    async def resume(self, judge: str) -> None:
        """Hand out ``judge``'s jobs again."""

    async def stats(self) -> list[JudgeQueueStats]:
        """Per judge with jobs, dead letters or a pause."""

    async def close(self) -> None:
        """Release connections; jobs in hand stay pending (reclaimed later)."""
