"""The judge queue's gauges on ``/metrics``: read from the shared queue once per scrape (never set by each worker
and summed: every worker sees the same queue), bounded by ``READ_TIMEOUT_S``.

- ``gateway_judge_queue_up``: 1 when the queue answered this scrape, 0 when it did not (Redis or the store down);
- per ``judge``: ``gateway_judge_queue_depth`` (jobs not done), ``gateway_judge_queue_pending`` (in hand),
  ``gateway_judge_queue_delayed``, ``gateway_judge_queue_oldest_age_seconds``, ``gateway_judge_queue_dead_letters``
  and ``gateway_judge_queue_paused`` (1 while paused).

The counters and histograms of the work itself (jobs by outcome, retries, duplicates, enqueue-to-start and
enqueue-to-done) are judges/worker/metrics.py's; the online jobs enqueued and dropped, judges/online/metrics.py's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

from judges.queue.base import JobQueue, QueueUnavailable

logger = logging.getLogger("judges.queue")

READ_TIMEOUT_S: Final = 1.0
_PER_JUDGE: Final = (
    ("gateway_judge_queue_depth", "Judge jobs not done (waiting, delayed or in hand), by judge.", "depth"),
    ("gateway_judge_queue_pending", "Judge jobs handed to a worker and not acked, by judge.", "pending"),
    ("gateway_judge_queue_delayed", "Judge jobs waiting for a retry time, by judge.", "delayed"),
    ("gateway_judge_queue_oldest_age_seconds", "Age of the oldest judge job not done, by judge.", "oldest_age_s"),
    ("gateway_judge_queue_dead_letters", "Judge jobs in the dead letters, by judge.", "dead_letters"),
)

SharedGauges = Callable[[], Awaitable[dict[str, Any]]]


def queue_gauges(queue: JobQueue) -> SharedGauges:
    """The reader ``/metrics`` calls (``app.state.shared_gauges``)."""

    async def read() -> dict[str, Any]:
        try:
            async with asyncio.timeout(READ_TIMEOUT_S):
                stats = await queue.stats()
        except (QueueUnavailable, TimeoutError) as exc:
            logger.debug("judge queue gauges: %s", exc)
            return {"gateway_judge_queue_up": _gauge("The judge queue answered this scrape (1) or not (0).", {(): 0})}
        gauges = {"gateway_judge_queue_up": _gauge("The judge queue answered this scrape (1) or not (0).", {(): 1})}
        for name, help_text, field in _PER_JUDGE:
            samples: dict[tuple[str, ...], float] = {(s.judge,): float(getattr(s, field)) for s in stats}
            gauges[name] = _gauge(help_text, samples, ("judge",))
        paused: dict[tuple[str, ...], float] = {(s.judge,): 1.0 if s.paused else 0.0 for s in stats}
        gauges["gateway_judge_queue_paused"] = _gauge("1 while the judge is paused.", paused, ("judge",))
        return gauges

    return read


def _gauge(help_text: str, samples: dict[tuple[str, ...], float], labelnames: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"help": help_text, "labelnames": list(labelnames), "samples": samples}
