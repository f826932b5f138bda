"""The shipper (judges/online/shipper.py): buffered jobs go to the queue in batches; a queue that is down
or stalled costs a bounded wait, and its jobs are dropped and counted, never held without bound.

The queue is tests/judges/memory_queue.py, a stand-in for the backends (Redis Streams, SQLite) until
they are merged; the shipper takes any ``JobQueue``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from judges.online import metrics
from judges.online.buffer import JobBuffer
from judges.online.shipper import JobShipper
from judges.queue.jobs import JudgeJob
from tests.judges.memory_queue import MemoryQueue


def _jobs(count: int, judge: str = "correctness") -> list[JudgeJob]:
    return [JudgeJob("online", judge, time.time(), trace_id=format(i, "032x"), span_id="0" * 16) for i in range(count)]


def _shipper(queue: MemoryQueue, capacity: int = 1000, **kwargs: Any) -> JobShipper:
    options = {"batch_size": 10, "flush_interval_s": 0.01, "enqueue_timeout_s": 0.2, "retry_delay_s": 0.01, **kwargs}
    return JobShipper(JobBuffer(capacity), queue, **options)


async def _until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


def _run(main: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(main(), 30))


def _dropped(reason: str) -> float:
    return metrics.JOBS_DROPPED.get((reason,))


def test_jobs_are_shipped_in_batches_and_counted_by_judge() -> None:
    queue = MemoryQueue()
    shipper = _shipper(queue)
    before = metrics.JOBS_ENQUEUED.get(("shipped-judge",))

    async def main() -> None:
        task = asyncio.create_task(shipper.run())
        shipper.buffer.put(_jobs(25, "shipped-judge"))
        await _until(lambda: len(queue.jobs) == 25)
        task.cancel()

    _run(main)
    assert queue.batches == [10, 10, 5]
    assert [job.trace_id for job in queue.jobs] == [job.trace_id for job in _jobs(25)]
    assert metrics.JOBS_ENQUEUED.get(("shipped-judge",)) - before == 25
    assert len(shipper.buffer) == 0


def test_an_unavailable_queue_is_tried_twice_then_the_batch_is_dropped(caplog: pytest.LogCaptureFixture) -> None:
    queue = MemoryQueue()
    queue.unavailable = True
    shipper = _shipper(queue)
    before = _dropped(metrics.QUEUE_UNAVAILABLE)

    async def main() -> None:
        shipper.buffer.put(_jobs(15))
        await shipper.ship_buffered()
        assert queue.attempts == 4  # two batches, each tried twice
        assert _dropped(metrics.QUEUE_UNAVAILABLE) - before == 15
        queue.unavailable = False  # back: the next batch goes through, and the outage's end is logged
        shipper.buffer.put(_jobs(3))
        await shipper.ship_buffered()

    _run(main)
    assert len(queue.jobs) == 3
    messages = [record.getMessage() for record in caplog.records if record.name == "judges.online"]
    assert messages[0].startswith("Judge queue unavailable") and "test queue: unavailable" in messages[0]
    assert "reachable again" in messages[1] and "15 online job(s) were dropped" in messages[1]


def test_a_stalled_queue_costs_the_enqueue_timeout_and_never_more_memory_than_the_buffer() -> None:
    """A queue that never answers: each batch waits enqueue_timeout_s twice, then is dropped; meanwhile
    the buffer fills to its capacity and further jobs are dropped there."""
    queue = MemoryQueue()
    queue.stalled.set()
    shipper = _shipper(queue, capacity=20, batch_size=5, enqueue_timeout_s=0.05)
    unavailable, full = _dropped(metrics.QUEUE_UNAVAILABLE), _dropped(metrics.BUFFER_FULL)

    async def main() -> None:
        task = asyncio.create_task(shipper.run())
        await _until(lambda: True)
        for _ in range(10):
            shipper.buffer.put(_jobs(10))
            assert len(shipper.buffer) <= 20
        await _until(lambda: _dropped(metrics.QUEUE_UNAVAILABLE) - unavailable >= 5)
        queue.stalled.clear()
        await _until(lambda: len(shipper.buffer) == 0)
        task.cancel()

    _run(main)
    shipped = len(queue.jobs)
    lost_to_queue = _dropped(metrics.QUEUE_UNAVAILABLE) - unavailable
    lost_to_buffer = _dropped(metrics.BUFFER_FULL) - full
    assert lost_to_buffer >= 75  # 100 offered while at most 20 (+ one batch of 5 in hand) could wait
    assert shipped + lost_to_queue + lost_to_buffer == 100


def test_close_ships_what_is_buffered_and_counts_the_rest_as_shutdown() -> None:
    queue = MemoryQueue()
    shipper = _shipper(queue)

    async def main() -> None:
        shipper.buffer.put(_jobs(12))
        await shipper.close(5.0)
        assert len(queue.jobs) == 12
        before = _dropped(metrics.SHUTDOWN)
        queue.stalled.set()  # now the queue hangs: close gives up after its bound
        shipper.buffer.put(_jobs(12))
        await shipper.close(0.05)
        assert _dropped(metrics.SHUTDOWN) - before == 12  # the batch in hand (10) and the 2 left
        assert len(shipper.buffer) == 0

    _run(main)


def test_a_queue_that_raises_something_else_loses_the_batch_and_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    class BrokenQueue(MemoryQueue):
        async def enqueue(self, jobs: Any) -> None:
            raise RuntimeError("a bug in the backend")

    shipper = _shipper(BrokenQueue())
    before = _dropped(metrics.QUEUE_ERROR)

    async def main() -> None:
        shipper.buffer.put(_jobs(3))
        assert await shipper.ship(shipper.buffer.take(10)) is False

    _run(main)
    assert _dropped(metrics.QUEUE_ERROR) - before == 3
    assert any("a bug in the backend" in (record.exc_text or str(record.exc_info)) for record in caplog.records)


def test_bad_arguments_are_refused_in_words() -> None:
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        _shipper(MemoryQueue(), batch_size=0)
    with pytest.raises(ValueError, match="capacity must be at least 1"):
        JobBuffer(0)
