"""The behaviour every judge queue backend keeps (judges/queue/base.py), written once and run on each.

A backend's test module subclasses :class:`JobQueueContract` (in a class whose name starts with ``Test``)
and defines the ``open_queue`` fixture: a :data:`QueueFactory` that opens a new queue instance on one
backend and namespace private to the test (a fresh database, a unique Redis key prefix), as another worker
process or replica would. It is called inside the test's event loop; the test closes every queue it opens.
Several instances of one test share the jobs, which is what the concurrency and reclaim tests need.

Nothing here is timed: a delay is either long enough never to pass during the test (an hour) or waited
for by polling with a deadline (:func:`eventually`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from judges.queue.base import Delivery, JobQueue, JudgeQueueStats
from judges.queue.jobs import JudgeJob

QueueFactory = Callable[[], JobQueue]
T = TypeVar("T")
WAIT_S = 30.0  # only a guard against a hang: a broken backend fails instead of blocking the suite
HOUR_S = 3600.0


def online_job(judge: str, n: int, *, age_s: float = 0.0) -> JudgeJob:
    return JudgeJob(
        kind="online", judge=judge, enqueued_at=time.time() - age_s, trace_id=f"{n:032x}", span_id=f"{n:016x}"
    )


def evaluation_job(judge: str, n: int) -> JudgeJob:
    return JudgeJob(kind="evaluation", judge=judge, enqueued_at=time.time(), evaluation_id="run-1", item_index=n)


def run(body: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(body())


@contextlib.asynccontextmanager
async def opened(open_queue: QueueFactory, count: int = 1) -> AsyncIterator[list[JobQueue]]:
    """``count`` queue instances on the test's backend, closed afterwards."""
    queues = [open_queue() for _ in range(count)]
    try:
        yield queues
    finally:
        for queue in queues:
            await queue.close()


async def eventually(probe: Callable[[], Awaitable[T]], done: Callable[[T], bool], what: str) -> T:
    """Call ``probe`` until ``done`` holds for its result (polling with a deadline, never sleep-then-assert)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        result = await probe()
        if done(result):
            return result
        assert time.monotonic() < deadline, f"gave up waiting for {what}; last: {result!r}"
        await asyncio.sleep(0.02)


async def drain(queue: JobQueue, consumer: str, count: int = 100) -> list[Delivery]:
    """Every job ready now, claimed by ``consumer`` (until a claim finds none)."""
    claimed: list[Delivery] = []
    while batch := await queue.claim(consumer, count, 0):
        claimed.extend(batch)
    return claimed


async def stats_of(queue: JobQueue, judge: str) -> JudgeQueueStats:
    """One judge's stats (all zero when the backend lists no line for it)."""
    found = [s for s in await queue.stats() if s.judge == judge]
    assert len(found) <= 1, found
    return found[0] if found else JudgeQueueStats(judge, 0, 0, 0, 0.0, 0)


class JobQueueContract:
    """The contract's tests; a subclass provides the ``open_queue`` fixture."""

    def test_enqueue_claim_ack(self, open_queue: QueueFactory) -> None:
        jobs = [online_job("safety", 1), online_job("safety", 2), evaluation_job("correctness", 3)]

        async def body() -> None:
            async with opened(open_queue) as (queue,):
                await queue.enqueue(jobs)
                assert (await stats_of(queue, "safety")).depth == 2
                claimed = await drain(queue, "worker-a")
                assert sorted(d.job.id for d in claimed) == sorted(j.id for j in jobs)
                assert {d.job.id: d.job for d in claimed} == {j.id: j for j in jobs}  # every field round-trips
                assert all(d.deliveries == 1 and d.attempts == 0 for d in claimed)
                safety = await stats_of(queue, "safety")
                assert (safety.depth, safety.pending, safety.delayed, safety.dead_letters) == (2, 2, 0, 0)
                await asyncio.gather(*(queue.ack(delivery) for delivery in claimed))  # concurrent acks
                assert await queue.claim("worker-a", 10, 0) == []
                assert await queue.reclaim("worker-b", 0.0, 5) == []
                assert all(s.depth == 0 and s.pending == 0 for s in await queue.stats())

        run(body)

    def test_claim_takes_at_most_count(self, open_queue: QueueFactory) -> None:
        async def body() -> None:
            async with opened(open_queue) as (queue,):
                assert await queue.claim("worker-a", 5, 0) == []  # empty: no wait with block_s 0
                await queue.enqueue([online_job("safety", n) for n in range(5)])
                first = await queue.claim("worker-a", 2, 0)
                assert len(first) == 2
                rest = await drain(queue, "worker-a", count=2)
                assert len(rest) == 3
                assert len({d.job.id for d in first + rest}) == 5

        run(body)

    def test_one_busy_judge_among_idle_ones_fills_a_claim(self, open_queue: QueueFactory) -> None:
        async def body() -> None:
            async with opened(open_queue) as (queue,):
                await queue.enqueue([online_job(f"idle-{n}", n) for n in range(3)])
                await queue.ack_many(await drain(queue, "worker-a"))  # three judges known, none with jobs
                await queue.enqueue([online_job("busy", n) for n in range(20)] + [online_job("idle-0", 99)])
                claimed = await queue.claim("worker-a", 12, 0)
                assert len(claimed) == 12
                assert len({d.job.id for d in claimed + await drain(queue, "worker-a")}) == 21

        run(body)

    def test_a_blocked_claim_gets_a_job_enqueued_while_it_waits(self, open_queue: QueueFactory) -> None:
        async def body() -> None:
            async with opened(open_queue, 2) as (consumer, producer):
                waiting = asyncio.create_task(consumer.claim("worker-a", 10, WAIT_S))
                await asyncio.sleep(0.05)  # let the claim start waiting (the result holds either way)
                await producer.enqueue([online_job("safety", 1)])
                claimed = await asyncio.wait_for(waiting, WAIT_S + 5)
                assert [d.job.id for d in claimed] == [online_job("safety", 1).id]

        run(body)

    def test_concurrent_consumers_never_get_the_same_job(self, open_queue: QueueFactory) -> None:
        total = 120

        async def body() -> None:
            async with opened(open_queue, 4) as queues:
                await queues[0].enqueue([online_job(f"judge-{n % 3}", n) for n in range(total)])

                async def consume(queue: JobQueue, name: str) -> list[str]:
                    return [d.job.id for d in await drain(queue, name, count=3)]

                claimed = await asyncio.gather(*(consume(q, f"worker-{i}") for i, q in enumerate(queues)))
                every = [job_id for ids in claimed for job_id in ids]
                assert len(every) == total and len(set(every)) == total
                assert sum(1 for ids in claimed if ids) >= 2, "one consumer took every job: no concurrency tested"

        run(body)

    def test_reclaim_hands_an_idle_job_to_another_consumer(self, open_queue: QueueFactory) -> None:
        async def body() -> None:
            async with opened(open_queue, 2) as (dead, live):
                await dead.enqueue([online_job("safety", 1)])
                (first,) = await dead.claim("worker-dead", 1, 0)
                assert await live.reclaim("worker-live", HOUR_S, 5) == []  # not idle for an hour
                reclaimed = await eventually(lambda: live.reclaim("worker-live", 0.05, 5), bool, "a reclaimed job")
                assert [(d.job.id, d.deliveries) for d in reclaimed] == [(first.job.id, 2)]
                assert await live.reclaim("worker-live", HOUR_S, 5) == []  # now held afresh
                assert (await stats_of(live, "safety")).pending == 1
                await live.ack(reclaimed[0])
                assert (await stats_of(live, "safety")).depth == 0
                assert await live.claim("worker-live", 1, 0) == []

        run(body)

    def test_touched_jobs_are_not_reclaimed_from_their_live_holder(self, open_queue: QueueFactory) -> None:
        async def body() -> None:
            async with opened(open_queue, 2) as (holder, other):
                await holder.enqueue([online_job("safety", 1), online_job("safety", 2)])
                touched, left = sorted(await holder.claim("worker-1", 2, 0), key=lambda d: d.job.id)
                claimed_at = time.monotonic()
                await asyncio.sleep(1.0)
                touched_at = time.monotonic()
                await holder.touch("worker-1", [touched])
                await other.touch("worker-2", [left])  # not worker-2's: left alone
                # The touched job has been idle since touched_at, the other since claimed_at: a bound
                # halfway between the two, taken now, tells them apart however long each step took.
                now = time.monotonic()
                reclaimed = await other.reclaim("worker-2", now - touched_at + (touched_at - claimed_at) / 2, 5)
                assert [d.job.id for d in reclaimed] == [left.job.id]

        run(body)

    def test_ack_many_acks_jobs_of_several_judges_at_once(self, open_queue: QueueFactory) -> None:
        jobs = [online_job("safety", n) for n in range(5)] + [evaluation_job("correctness", n) for n in range(3)]

        async def body() -> None:
            async with opened(open_queue) as (queue,):
                await queue.enqueue(jobs)
                claimed = await drain(queue, "worker-a")
                assert len(claimed) == len(jobs)
                await queue.ack_many(claimed[:-1])
                await queue.ack_many([])
                depths = {s.judge: (s.depth, s.pending) for s in await queue.stats()}
                assert sum(depth for depth, _ in depths.values()) == 1
                await queue.ack_many(claimed[-1:])
                assert all(s.depth == 0 and s.pending == 0 for s in await queue.stats())
                assert await queue.reclaim("worker-b", 0.0, 5) == []

        run(body)

    def test_paused_names_each_paused_judge_and_why(self, open_queue: QueueFactory) -> None:
        async def body() -> None:
            async with opened(open_queue, 2) as (one, two):
                assert await one.paused() == {}
                await one.pause("safety", "HTTP 401 from route judge")
                assert await two.paused() == {"safety": "HTTP 401 from route judge"}
                await two.resume("safety")
                assert await one.paused() == {}

        run(body)

    def test_a_job_past_max_deliveries_is_returned_for_the_dead_letters(self, open_queue: QueueFactory) -> None:
        max_deliveries = 2

        async def body() -> None:
            async with opened(open_queue) as (queue,):
                await queue.enqueue([online_job("safety", 1)])
                (delivery,) = await queue.claim("worker-1", 1, 0)
                seen = [delivery.deliveries]
                while delivery.deliveries <= max_deliveries:
                    (delivery,) = await eventually(
                        lambda: queue.reclaim("worker-2", 0.01, max_deliveries), bool, "a reclaimed job"
                    )
                    seen.append(delivery.deliveries)
                assert seen == [1, 2, 3]
                await queue.dead_letter(delivery, "worker crashed 3 times running it")
                stats = await stats_of(queue, "safety")
                assert (stats.depth, stats.pending, stats.dead_letters) == (0, 0, 1)
                assert await queue.claim("worker-1", 1, 0) == []
                assert await queue.reclaim("worker-2", 0.0, max_deliveries) == []

        run(body)

    def test_dead_letter_leaves_the_queue_and_is_counted(self, open_queue: QueueFactory) -> None:
        async def body() -> None:
            async with opened(open_queue) as (queue,):
                await queue.enqueue([online_job("safety", 1), online_job("safety", 2)])
                first, second = await queue.claim("worker-a", 2, 0)
                await queue.retry_later(first, 0.0, count_attempt=True)
                (again,) = await eventually(lambda: queue.claim("worker-a", 1, 0), bool, "the retried job")
                assert (again.job.id, again.attempts) == (first.job.id, 1)
                await queue.dead_letter(again, "unparseable answer, twice")
                await queue.ack(second)
                stats = await stats_of(queue, "safety")
                assert (stats.depth, stats.pending, stats.delayed, stats.dead_letters) == (0, 0, 0, 1)
                assert await queue.claim("worker-a", 1, 0) == []

        run(body)

    def test_retry_later_waits_then_hands_the_job_out_again(self, open_queue: QueueFactory) -> None:
        async def body() -> None:
            async with opened(open_queue) as (queue,):
                jobs = [online_job("safety", n) for n in range(3)]
                await queue.enqueue(jobs)
                held = {d.job.id: d for d in await queue.claim("worker-a", 3, 0)}
                later, transient, counted = (held[j.id] for j in jobs)
                await queue.retry_later(later, HOUR_S, count_attempt=True)  # not due during the test
                await queue.retry_later(transient, 0.05, count_attempt=False)
                await queue.retry_later(counted, 0.05, count_attempt=True)
                stats = await stats_of(queue, "safety")
                assert (stats.depth, stats.pending) == (3, 0) and stats.delayed >= 1

                retried: dict[str, Delivery] = {}

                async def claim_more() -> int:
                    retried.update((d.job.id, d) for d in await queue.claim("worker-b", 10, 0))
                    return len(retried)

                await eventually(claim_more, lambda n: n >= 2, "the two short retries")
                assert set(retried) == {transient.job.id, counted.job.id}
                assert retried[transient.job.id].attempts == 0  # a transient failure uses no attempt
                assert retried[counted.job.id].attempts == 1
                stats = await stats_of(queue, "safety")
                assert (stats.depth, stats.pending, stats.delayed) == (3, 2, 1)
                for delivery in retried.values():
                    await queue.ack(delivery)
                assert await queue.claim("worker-b", 10, 0) == []  # the hour-long delay still holds
                assert (await stats_of(queue, "safety")).delayed == 1

        run(body)

    def test_a_paused_judge_keeps_its_jobs_until_resumed(self, open_queue: QueueFactory) -> None:
        async def body() -> None:
            async with opened(open_queue, 2) as (queue, other):
                await queue.enqueue([online_job("safety", n) for n in range(3)] + [online_job("relevance", 9)])
                await queue.pause("safety", "401 from route judge: check its api key")
                claimed = await drain(other, "worker-b")  # another instance sees the pause too
                assert [d.job.judge for d in claimed] == ["relevance"]
                safety = await stats_of(other, "safety")
                assert (safety.depth, safety.pending, safety.paused) == (
                    3,
                    0,
                    "401 from route judge: check its api key",
                )
                assert (await stats_of(queue, "relevance")).paused is None

                await queue.resume("safety")
                resumed = await eventually(lambda: other.claim("worker-b", 10, 0), bool, "the resumed judge's jobs")
                resumed += await drain(other, "worker-b")
                assert sorted(d.job.id for d in resumed) == sorted(online_job("safety", n).id for n in range(3))
                assert (await stats_of(other, "safety")).paused is None

        run(body)

    def test_pause_is_shown_without_jobs_and_a_second_pause_replaces_the_reason(self, open_queue: QueueFactory) -> None:
        async def body() -> None:
            async with opened(open_queue) as (queue,):
                await queue.pause("safety", "unknown route judge")
                await queue.pause("safety", "401 from route judge")
                assert (await stats_of(queue, "safety")).paused == "401 from route judge"
                await queue.resume("safety")
                await queue.resume("safety")  # resuming a judge that is not paused is harmless
                assert (await stats_of(queue, "safety")).paused is None

        run(body)

    def test_stats_count_each_state_and_the_oldest_job(self, open_queue: QueueFactory) -> None:
        async def body() -> None:
            async with opened(open_queue) as (queue,):
                await queue.enqueue([online_job("safety", 1, age_s=120.0)] + [online_job("safety", n) for n in (2, 3)])
                await queue.enqueue([online_job("relevance", 4)])
                held = await queue.claim("worker-a", 2, 0)
                safety_held = [d for d in held if d.job.judge == "safety"]
                if safety_held:
                    await queue.retry_later(safety_held[0], HOUR_S, count_attempt=False)
                stats = {s.judge: s for s in await queue.stats()}
                assert {"safety", "relevance"} <= set(stats)
                safety = stats["safety"]
                assert safety.depth == 3 and safety.dead_letters == 0 and safety.paused is None
                assert safety.delayed == (1 if safety_held else 0)
                assert safety.pending == sum(1 for d in held if d.job.judge == "safety") - safety.delayed
                assert 120.0 <= safety.oldest_age_s < 120.0 + WAIT_S
                assert stats["relevance"].depth == 1 and 0.0 <= stats["relevance"].oldest_age_s < WAIT_S

        run(body)
