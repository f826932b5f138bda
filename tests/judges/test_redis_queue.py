"""The Redis Streams judge queue (judges/queue/redis_streams.py) on a real Redis: enqueue, claim, ack;
reclaim after min_idle_s with delivery counts; delayed retries moved back atomically with their attempts;
dead letters; pause and resume seen by another process's queue object; a malformed entry; stats; and a
Redis that does not answer is QueueUnavailable, in bounded time."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

from judges.queue.base import JobsRefused, QueueUnavailable
from judges.queue.redis_streams import GROUP, RedisStreamsQueue
from tests.conftest import REDIS_URL
from tests.judges.queue_contract import JobQueueContract, QueueFactory
from tests.judges.worker_procs import online_job, redis_prefix, run

redis_prefix = redis_prefix  # a fixture, used by name


@pytest.fixture
def prefix(redis_prefix: str) -> str:
    return redis_prefix


@pytest.fixture
def open_queue(redis_prefix: str) -> QueueFactory:
    """Each call: another queue object on the test's key prefix (as another worker process would have)."""
    return lambda: RedisStreamsQueue(REDIS_URL, key_prefix=redis_prefix)


class TestRedisStreamsQueue(JobQueueContract):
    """The contract every backend keeps (tests/judges/queue_contract.py), on Redis."""


def test_enqueue_claim_ack(prefix: str) -> None:
    jobs = [online_job(f"{i:032x}", judge) for i in range(3) for judge in ("safety", "correctness")]

    async def work(queue: RedisStreamsQueue) -> None:
        await queue.enqueue(jobs)
        claimed = await queue.claim("c1", 10, 0.1)
        assert sorted(d.job.id for d in claimed) == sorted(j.id for j in jobs)
        assert {d.deliveries for d in claimed} == {1} and {d.attempts for d in claimed} == {0}
        assert await queue.claim("c2", 10, 0.05) == []  # handed out once
        stats = {s.judge: s for s in await queue.stats()}
        assert stats["safety"].depth == 3 and stats["safety"].pending == 3
        for delivery in claimed:
            await queue.ack(delivery)
        stats = {s.judge: s for s in await queue.stats()}
        assert (stats["safety"].depth, stats["safety"].pending, stats["safety"].oldest_age_s) == (0, 0, 0.0)
        # An acked entry is gone from the stream: the stream holds exactly the work not done.
        assert await queue._client.xlen(queue.stream_key("safety")) == 0

    run(work, prefix)


def test_reclaim_after_min_idle_counts_deliveries(prefix: str) -> None:
    async def work(queue: RedisStreamsQueue) -> None:
        await queue.enqueue([online_job("a" * 32)])
        (first,) = await queue.claim("dead-worker", 1, 0.1)
        assert await queue.reclaim("live", 5.0, 3) == []  # not idle long enough
        deadline = time.monotonic() + 5
        reclaimed = []
        while not reclaimed and time.monotonic() < deadline:
            reclaimed = await queue.reclaim("live", 0.05, 3)
            await asyncio.sleep(0.02)
        assert [(d.job.id, d.ref, d.deliveries) for d in reclaimed] == [(first.job.id, first.ref, 2)]
        pending = await queue._client.xpending_range(queue.stream_key("safety"), GROUP, "-", "+", 10)
        assert [p["consumer"] for p in pending] == ["live"]
        await queue.ack(reclaimed[0])
        assert await queue.reclaim("live", 0.0, 3) == []

    run(work, prefix)


def test_delayed_retry_moves_back_with_attempts(prefix: str) -> None:
    async def work(queue: RedisStreamsQueue) -> None:
        job = online_job("b" * 32)
        await queue.enqueue([job])
        (delivery,) = await queue.claim("c1", 1, 0.1)
        await queue.retry_later(delivery, 0.3, count_attempt=True)
        (stats,) = await queue.stats()
        assert (stats.depth, stats.pending, stats.delayed) == (1, 0, 1)  # in the sorted set, nowhere else
        assert await queue.claim("c1", 1, 0.05) == []  # not due yet
        deadline = time.monotonic() + 5
        again = []
        while not again and time.monotonic() < deadline:
            again = await queue.claim("c1", 1, 0.05)
        assert [(d.job, d.attempts, d.deliveries) for d in again] == [(job, 1, 1)]
        (stats,) = await queue.stats()
        assert (stats.depth, stats.pending, stats.delayed) == (1, 1, 0)
        # A transient retry keeps the attempts it had.
        await queue.retry_later(again[0], 0.0, count_attempt=False)
        (third,) = await queue.claim("c1", 1, 0.1)
        assert third.attempts == 1
        # Retrying an entry that was already acked (another worker finished the job) does not put it back.
        await queue.ack(third)
        await queue.retry_later(third, 0.0, count_attempt=False)
        assert (await queue.stats())[0].depth == 0

    run(work, prefix)


def test_dead_letter_keeps_the_job_and_its_counts(prefix: str) -> None:
    async def work(queue: RedisStreamsQueue) -> None:
        job = online_job("c" * 32)
        await queue.enqueue([job])
        (delivery,) = await queue.claim("c1", 1, 0.1)
        await queue.dead_letter(delivery, "poison: cannot be read")
        (stats,) = await queue.stats()
        assert (stats.depth, stats.pending, stats.dead_letters) == (0, 0, 1)
        (letter,) = await queue.dead_letters("safety")
        assert letter["trace_id"] == job.trace_id and letter["reason"] == "poison: cannot be read"
        assert (letter["deliveries"], letter["attempts"]) == ("1", "0")

    run(work, prefix)


def test_malformed_entry_goes_to_the_dead_letters(prefix: str) -> None:
    async def work(queue: RedisStreamsQueue) -> None:
        await queue.enqueue([online_job("d" * 32)])  # makes the stream and its group
        await queue._client.xadd(queue.stream_key("safety"), {"kind": "nonsense"})
        claimed = await queue.claim("c1", 10, 0.1)
        assert [d.job.trace_id for d in claimed] == ["d" * 32]
        (letter,) = await queue.dead_letters("safety")
        assert letter["reason"].startswith("malformed entry") and letter["kind"] == "nonsense"

    run(work, prefix)


def test_pause_is_seen_by_every_queue_object_and_keeps_jobs(prefix: str) -> None:
    async def work(queue: RedisStreamsQueue) -> None:
        other = RedisStreamsQueue(REDIS_URL, key_prefix=prefix)  # another worker process's view
        try:
            await queue.enqueue([online_job("e" * 32, "safety"), online_job("f" * 32, "correctness")])
            await queue.pause("safety", "upstream_401: the judge route refused the key")
            claimed = await other.claim("c2", 10, 0.1)
            assert [d.job.judge for d in claimed] == ["correctness"]
            assert await other.paused() == {"safety": "upstream_401: the judge route refused the key"}
            stats = {s.judge: s for s in await other.stats()}
            assert stats["safety"].paused and stats["safety"].depth == 1
            await queue.resume("safety")
            assert [d.job.judge for d in await other.claim("c2", 10, 0.1)] == ["safety"]
        finally:
            await other.close()

    run(work, prefix)


def test_stats_oldest_age(prefix: str) -> None:
    async def work(queue: RedisStreamsQueue) -> None:
        job = online_job("1" * 32)
        old = type(job)(kind=job.kind, judge=job.judge, enqueued_at=time.time() - 120, trace_id=job.trace_id)
        await queue.enqueue([old])
        (stats,) = await queue.stats()
        assert 119 < stats.oldest_age_s < 600

    run(work, prefix)


def test_a_redis_that_does_not_answer_is_unavailable_in_bounded_time() -> None:
    """A socket that accepts and never answers (a stalled Redis): every call raises QueueUnavailable
    within about the queue's timeout, never hangs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:

        async def work() -> None:
            queue = RedisStreamsQueue(f"redis://127.0.0.1:{listener.getsockname()[1]}/0", timeout_s=0.3)
            try:
                for call in (
                    queue.enqueue([online_job("2" * 32)]),
                    queue.claim("c1", 1, 0.1),
                    queue.stats(),
                    queue.pause("safety", "x"),
                ):
                    with pytest.raises(QueueUnavailable):
                        await asyncio.wait_for(call, 5)
            finally:
                await queue.close()

        asyncio.run(work())
    finally:
        stop.set()
        thread.join(2)
        for conn in accepted:
            conn.close()
        listener.close()


def test_a_redis_that_lost_its_data_gets_its_groups_back(prefix: str) -> None:
    """Redis restarted without its data: the consumer groups this process made are gone; the next claim
    makes them again and the jobs enqueued since are delivered."""

    async def work(queue: RedisStreamsQueue) -> None:
        await queue.enqueue([online_job("3" * 32)])
        (first,) = await queue.claim("c1", 1, 0.1)
        await queue.ack(first)
        await queue._client.delete(queue.stream_key("safety"))  # the data lost
        await queue.enqueue([online_job("4" * 32)])  # the stream again, without its group
        assert await queue.claim("c1", 1, 0.05) == []  # NOGROUP: the groups are made again
        (again,) = await queue.claim("c1", 1, 0.1)
        assert again.job.trace_id == "4" * 32

    run(work, prefix)


def test_a_judge_key_that_is_not_a_stream_pauses_that_judge_only(prefix: str) -> None:
    """A judge's stream key overwritten with a string (by hand, or another program on the prefix): Redis refuses
    a read over all the streams (WRONGTYPE); that judge is paused with the key and its type named, and the other
    judges' jobs are claimed; an enqueue for it leaves the others' jobs queued."""

    async def work(queue: RedisStreamsQueue) -> None:
        await queue.enqueue([online_job("5" * 32, "safety"), online_job("6" * 32, "correctness")])
        await queue._client.delete(queue.stream_key("safety"))
        await queue._client.set(queue.stream_key("safety"), "not a stream")
        assert await queue.claim("c1", 10, 0.05) == []  # WRONGTYPE: the culprit is found and paused
        paused = await queue.paused()
        assert list(paused) == ["safety"]
        assert queue.stream_key("safety") in paused["safety"] and "holds a string, not a stream" in paused["safety"]
        (claimed,) = await queue.claim("c1", 10, 0.1)
        assert claimed.job.judge == "correctness"
        await queue.ack(claimed)
        await queue.resume("safety")
        with pytest.raises(JobsRefused) as refused:
            await queue.enqueue([online_job("7" * 32, "safety"), online_job("8" * 32, "correctness")])
        assert [job.trace_id for job in refused.value.jobs] == ["7" * 32] and "WRONGTYPE" in str(refused.value)
        assert "safety" in await queue.paused()  # paused again, the other judge's job queued
        (other,) = await queue.claim("c1", 10, 0.1)
        assert other.job.trace_id == "8" * 32

    run(work, prefix)


def test_touched_jobs_in_hand_are_not_reclaimed_and_keep_their_delivery_count(prefix: str) -> None:
    async def work(queue: RedisStreamsQueue) -> None:
        await queue.enqueue([online_job("5" * 32)])
        (held,) = await queue.claim("live", 1, 0.1)
        for _ in range(3):  # a job that runs longer than min_idle_s (1 s), its holder alive and touching it
            await asyncio.sleep(0.4)
            await queue.touch("live", [held])
            assert await queue.reclaim("other", 1.0, 3) == []
        (pending,) = await queue._client.xpending_range(queue.stream_key("safety"), GROUP, "-", "+", 10)
        assert (pending["consumer"], pending["times_delivered"]) == ("live", 1)

    run(work, prefix)
