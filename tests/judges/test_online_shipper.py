"""The shipper (judges/online/shipper.py): buffered jobs go to the queue in batches; a queue that is down
or stalled costs a bounded wait, and its jobs are dropped and counted, never held without bound.

On the real backends: the store's queue (judges/queue/local.py) on the test's SQLite file, whose jobs are
read back with ``claim``; Redis Streams (judges/queue/redis_streams.py) under the test's own key prefix,
behind a proxy that is cut and restored (Redis down, then back), on a server that accepts and never
answers (Redis stalled), or with a judge's stream key holding a string (Redis answers WRONGTYPE: an error
that is not about availability)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from judges.online import metrics
from judges.online.buffer import JobBuffer
from judges.online.shipper import JobShipper
from judges.queue.base import JobQueue
from judges.queue.jobs import JudgeJob
from judges.queue.local import LocalJobQueue
from judges.queue.redis_streams import RedisStreamsQueue
from tests.conftest import REDIS_URL
from tests.judges.worker_procs import StalledServer, TcpProxy, redis_prefix, unique_prefix
from tests.llm.conftest import wait_until

redis_prefix = redis_prefix  # a fixture, used by name


def _jobs(count: int, judge: str = "correctness") -> list[JudgeJob]:
    return [JudgeJob("online", judge, time.time(), trace_id=format(i, "032x"), span_id="0" * 16) for i in range(count)]


def _shipper(queue: JobQueue, capacity: int = 1000, **kwargs: Any) -> JobShipper:
    options = {"batch_size": 10, "flush_interval_s": 0.01, "enqueue_timeout_s": 0.2, "retry_delay_s": 0.01, **kwargs}
    return JobShipper(JobBuffer(capacity), queue, **options)


def _store_queue(tmp_path: Path) -> LocalJobQueue:
    """The store's queue on a fresh SQLite file in ``tmp_path`` (migrated; blocking: before the loop runs)."""
    return LocalJobQueue.open(f"sqlite:///{tmp_path}/store.db")


async def _queued(queue: JobQueue) -> list[JudgeJob]:
    """Every job waiting in ``queue``, oldest first (claimed by a probe consumer: they leave the queue)."""
    return [delivery.job for delivery in await queue.claim("probe", 1000, 0)]


async def _until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


def _run(main: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(main(), 30))


def _dropped(reason: str) -> float:
    return metrics.JOBS_DROPPED.get((reason,))


def test_jobs_are_shipped_in_batches_and_counted_by_judge(tmp_path: Path) -> None:
    queue = _store_queue(tmp_path)
    shipper = _shipper(queue)
    before = metrics.JOBS_ENQUEUED.get(("shipped-judge",))

    async def main() -> None:
        try:
            task = asyncio.create_task(shipper.run())
            shipper.buffer.put(_jobs(25, "shipped-judge"))
            await _until(lambda: metrics.JOBS_ENQUEUED.get(("shipped-judge",)) - before == 25)
            task.cancel()
            assert [(s.judge, s.depth) for s in await queue.stats()] == [("shipped-judge", 25)]
            queued = await _queued(queue)
            assert [job.trace_id for job in queued] == [job.trace_id for job in _jobs(25)]
            assert {job.judge for job in queued} == {"shipped-judge"}
        finally:
            await queue.close()

    _run(main)
    assert len(shipper.buffer) == 0


def test_an_unavailable_queue_is_tried_twice_then_the_batch_is_dropped(
    redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis cut off (every connection refused at once): both batches are tried twice and dropped; once
    it is back, the next batch goes through, and the outage's end is logged with the count."""
    proxy = TcpProxy()
    proxy.cut()
    wait_until(lambda: not proxy.open, what="the cut")
    queue = RedisStreamsQueue(proxy.url, key_prefix=redis_prefix, timeout_s=0.5)
    shipper = _shipper(queue)
    before = _dropped(metrics.QUEUE_UNAVAILABLE)

    async def main() -> None:
        try:
            shipper.buffer.put(_jobs(15))
            assert await shipper.ship(shipper.buffer.take(10)) is False
            await shipper.ship_buffered()
            assert _dropped(metrics.QUEUE_UNAVAILABLE) - before == 15
            proxy.restore()
            await _until(lambda: proxy.open)
            shipper.buffer.put(_jobs(3))
            await shipper.ship_buffered()
            assert [job.trace_id for job in await _queued(queue)] == [job.trace_id for job in _jobs(3)]
        finally:
            await queue.close()
            proxy.close()

    _run(main)
    messages = [record.getMessage() for record in caplog.records if record.name == "judges.online"]
    assert messages[0].startswith("Judge queue unavailable"), messages
    assert "reachable again" in messages[1] and "15 online job(s) were dropped" in messages[1], messages


def test_a_stalled_queue_costs_the_enqueue_timeout_and_never_more_memory_than_the_buffer() -> None:
    """Redis stalled (it accepts and never answers): each batch waits enqueue_timeout_s twice, then is
    dropped; meanwhile the buffer fills to its capacity and further jobs are dropped there. Every job
    offered is accounted for: dropped by the queue, by the buffer, or at shutdown."""
    stalled = StalledServer()
    queue = RedisStreamsQueue(stalled.url, key_prefix=unique_prefix())
    shipper = _shipper(queue, capacity=20, batch_size=5, enqueue_timeout_s=0.05)
    enqueued = metrics.JOBS_ENQUEUED.get(("stalled-judge",))
    unavailable, full = _dropped(metrics.QUEUE_UNAVAILABLE), _dropped(metrics.BUFFER_FULL)
    shutdown = _dropped(metrics.SHUTDOWN)

    async def main() -> None:
        try:
            task = asyncio.create_task(shipper.run())
            await asyncio.sleep(0)
            for _ in range(10):
                shipper.buffer.put(_jobs(10, "stalled-judge"))
                assert len(shipper.buffer) <= 20
            await _until(lambda: _dropped(metrics.QUEUE_UNAVAILABLE) - unavailable >= 5)
            task.cancel()
            await shipper.close(0.05)
        finally:
            await queue.close()
            stalled.close()

    _run(main)
    assert stalled.accepted >= 1  # the calls did reach the stalled server
    assert metrics.JOBS_ENQUEUED.get(("stalled-judge",)) == enqueued
    lost_to_queue = _dropped(metrics.QUEUE_UNAVAILABLE) - unavailable
    lost_to_buffer = _dropped(metrics.BUFFER_FULL) - full
    lost_at_shutdown = _dropped(metrics.SHUTDOWN) - shutdown
    assert lost_to_buffer >= 75  # 100 offered while at most 20 (+ one batch of 5 in hand) could wait
    assert lost_to_queue + lost_to_buffer + lost_at_shutdown == 100


def test_close_ships_what_is_buffered(tmp_path: Path) -> None:
    queue = _store_queue(tmp_path)
    shipper = _shipper(queue)

    async def main() -> None:
        try:
            shipper.buffer.put(_jobs(12))
            await shipper.close(5.0)
            assert len(await _queued(queue)) == 12
        finally:
            await queue.close()

    _run(main)
    assert len(shipper.buffer) == 0


def test_close_on_a_stalled_queue_gives_up_after_its_bound_and_counts_the_rest_as_shutdown() -> None:
    stalled = StalledServer()
    queue = RedisStreamsQueue(stalled.url, key_prefix=unique_prefix())
    shipper = _shipper(queue)
    before = _dropped(metrics.SHUTDOWN)

    async def main() -> None:
        try:
            shipper.buffer.put(_jobs(12))
            await shipper.close(0.05)
        finally:
            await queue.close()
            stalled.close()

    _run(main)
    assert _dropped(metrics.SHUTDOWN) - before == 12  # the batch in hand (10) and the 2 left
    assert len(shipper.buffer) == 0


def test_a_queue_that_raises_something_else_loses_the_batch_and_goes_on(
    redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The judge's stream key holds a string: Redis answers WRONGTYPE, an error that is not about its
    availability, so the batch is dropped at once (``queue_error``), not tried again; other judges' jobs
    still go through."""
    queue = RedisStreamsQueue(REDIS_URL, key_prefix=redis_prefix)
    shipper = _shipper(queue)
    before = _dropped(metrics.QUEUE_ERROR)
    unavailable = _dropped(metrics.QUEUE_UNAVAILABLE)

    async def main() -> None:
        client = aioredis.Redis.from_url(REDIS_URL)
        try:
            await client.set(queue.stream_key("broken"), "not a stream")
            assert await shipper.ship(_jobs(3, "broken")) is False
            assert await shipper.ship(_jobs(2, "fine")) is True
            # (stats, not a claim: a claim would find the broken key and pause its judge)
            assert {s.judge: s.depth for s in await queue.stats()} == {"broken": 0, "fine": 2}
        finally:
            await client.aclose()
            await queue.close()

    _run(main)
    assert _dropped(metrics.QUEUE_ERROR) - before == 3
    assert _dropped(metrics.QUEUE_UNAVAILABLE) == unavailable
    assert any("WRONGTYPE" in (record.exc_text or str(record.exc_info)) for record in caplog.records)


def test_bad_arguments_are_refused_in_words() -> None:
    queue = RedisStreamsQueue(REDIS_URL, key_prefix=unique_prefix())  # never used: no connection is made
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        _shipper(queue, batch_size=0)
    with pytest.raises(ValueError, match="capacity must be at least 1"):
        JobBuffer(0)
