"""The bounded buffer between the span processor (which appends jobs on the thread that ends a span)
and the shipper (which takes batches on the event loop): a deque under a lock, never larger than its
capacity; what does not fit is dropped and counted (``buffer_full``), never held without bound.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence

from judges.online import metrics
from judges.queue.jobs import JudgeJob


class JobBuffer:
    """At most ``capacity`` jobs waiting for the queue."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._jobs: deque[JudgeJob] = deque()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._jobs)

    def put(self, jobs: Sequence[JudgeJob]) -> int:
        """Append what fits; the rest is counted as dropped (``buffer_full``). Returns how many were kept."""
        with self._lock:
            room = self.capacity - len(self._jobs)
            kept = jobs if len(jobs) <= room else jobs[: max(room, 0)]
            self._jobs.extend(kept)
        dropped = len(jobs) - len(kept)
        if dropped:
            metrics.JOBS_DROPPED.inc((metrics.BUFFER_FULL,), dropped)
        return len(kept)

    def take(self, count: int) -> list[JudgeJob]:
        """Up to ``count`` jobs, oldest first (empty when none wait)."""
        with self._lock:
            jobs = self._jobs
            return [jobs.popleft() for _ in range(min(count, len(jobs)))]

    def clear(self) -> int:
        """Forget every waiting job; how many there were."""
        with self._lock:
            count = len(self._jobs)
            self._jobs.clear()
        return count
