"""A minimal in-memory judge queue for the online tests: a test double of the QUEUE BACKEND interface
(judges/queue/base.py ``JobQueue``), not of the online code under test, which it only receives jobs from.

Stands in until the real backends (judges/queue/redis_streams.py, judges/queue/local.py) are merged;
the shipper and app tests then take those instead. ``unavailable`` makes ``enqueue`` raise
``QueueUnavailable`` (Redis down); ``stalled`` makes it wait until released (a socket that accepts and
never answers). Only ``enqueue`` and ``close`` are used by the online code; the rest keep the interface.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

from judges.queue.base import Delivery, JudgeQueueStats, QueueUnavailable
from judges.queue.jobs import JudgeJob


class MemoryQueue:
    def __init__(self) -> None:
        self.jobs: list[JudgeJob] = []
        self.batches: list[int] = []  # the size of each enqueue call that succeeded
        self.attempts = 0  # enqueue calls, failed ones included
        self.unavailable = False
        self.stalled = threading.Event()  # set: enqueue waits (polling) until it is cleared
        self.closed = False
        self._lock = threading.Lock()

    async def enqueue(self, jobs: Sequence[JudgeJob]) -> None:
        self.attempts += 1
        while self.stalled.is_set():
            await asyncio.sleep(0.01)
        if self.unavailable:
            raise QueueUnavailable("test queue: unavailable")
        with self._lock:
            self.jobs.extend(jobs)
            self.batches.append(len(jobs))

    def snapshot(self) -> list[JudgeJob]:
        with self._lock:
            return list(self.jobs)

    async def claim(self, consumer: str, count: int, block_s: float) -> list[Delivery]:
        return []

    async def ack(self, delivery: Delivery) -> None:
        pass

    async def retry_later(self, delivery: Delivery, delay_s: float, *, count_attempt: bool) -> None:
        pass

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        pass

    async def reclaim(self, consumer: str, min_idle_s: float, max_deliveries: int) -> list[Delivery]:
        return []

    async def pause(self, judge: str, reason: str) -> None:
        pass

    async def resume(self, judge: str) -> None:
        pass

    async def stats(self) -> list[JudgeQueueStats]:
        return []

    async def close(self) -> None:
        self.closed = True
