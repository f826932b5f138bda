"""The embedded judge queue (judges/queue/local.py): the JobQueue contract on SQLite and on PostgreSQL, and
what only a queue in the store shows: dead letters' rows, wake-ups within the process, leases, separate
processes on one store, and a store that goes away."""

from __future__ import annotations

import asyncio
import multiprocessing
from typing import Any

import pytest
import sqlalchemy as sa

from gateway.store.engine import open_engine
from gateway.store.migrations import open_migrated_engine
from gateway.store.schema import judge_jobs
from judges.queue.base import QueueUnavailable
from judges.queue.local import LocalJobQueue
from tests.judges.queue_contract import (
    HOUR_S,
    WAIT_S,
    JobQueueContract,
    QueueFactory,
    drain,
    eventually,
    online_job,
    opened,
    run,
    stats_of,
)
from tests.telemetry.tcp_proxy import tcp_proxy

PROCESSES = 3
PROCESS_JOBS = 300


@pytest.fixture
def migrated_url(store_url: str) -> str:
    """``store_url`` (a fresh SQLite file, or a private PostgreSQL schema) with the schema in place."""
    open_migrated_engine(store_url).dispose()
    return store_url


@pytest.fixture
def open_queue(migrated_url: str) -> QueueFactory:
    """Each call: another queue on the test's store, on its own engine (as another process would have)."""

    def open_one() -> LocalJobQueue:
        return LocalJobQueue(open_engine(migrated_url), poll_interval_s=0.05, owns_engine=True)

    return open_one


class TestLocalJobQueue(JobQueueContract):
    """The contract, on SQLite and on PostgreSQL (``store_url`` runs both)."""


def _rows(url: str) -> list[dict[str, Any]]:
    engine = open_engine(url)
    try:
        with engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(sa.select(judge_jobs).order_by(judge_jobs.c.id))]
    finally:
        engine.dispose()


def test_a_dead_letter_keeps_its_reason_deliveries_and_attempts(open_queue: QueueFactory, migrated_url: str) -> None:
    async def body() -> None:
        async with opened(open_queue) as (queue,):
            await queue.enqueue([online_job("safety", 1)])
            (first,) = await queue.claim("worker-a", 1, 0)
            await queue.retry_later(first, 0.0, count_attempt=True)
            await queue.claim("worker-a", 1, 0)  # delivery 1 of the retried job; worker-a dies holding it
            (reclaimed,) = await eventually(lambda: queue.reclaim("worker-b", 0.01, 1), bool, "a reclaimed job")
            assert (reclaimed.deliveries, reclaimed.attempts) == (2, 1)  # past max_deliveries=1
            await queue.dead_letter(reclaimed, "delivered 2 times (max_deliveries 1)")

    run(body)
    (row,) = _rows(migrated_url)
    assert (row["state"], row["dead_reason"]) == ("dead", "delivered 2 times (max_deliveries 1)")
    assert (row["deliveries"], row["attempts"], row["consumer"], row["job_id"]) == (
        2,
        1,
        "worker-b",
        online_job("safety", 1).id,
    )
    assert row["dead_at"] is not None and row["lease"] is None


def test_acks_delete_their_rows_in_batches(open_queue: QueueFactory, migrated_url: str) -> None:
    async def body() -> None:
        async with opened(open_queue) as (queue,):
            await queue.enqueue([online_job("safety", n) for n in range(101)])
            held = await queue.claim("worker-a", 100, 0)
            await queue.ack(held[0])  # alone
            await asyncio.gather(*(queue.ack(d) for d in held[1:50]))  # in one batch
            await asyncio.gather(*(queue.ack(d) for d in held[50:]), queue.ack(held[50]))  # twice: harmless

    run(body)
    assert [(row["state"], row["deliveries"], row["job_id"]) for row in _rows(migrated_url)] == [
        ("ready", 0, online_job("safety", 100).id)
    ]


def test_a_blocked_claim_wakes_at_once_on_an_enqueue_or_resume_in_this_process(migrated_url: str) -> None:
    """Polling every hour: only the in-process wake-up can hand these jobs out within ``WAIT_S``."""

    async def body() -> None:
        queue = LocalJobQueue(open_engine(migrated_url), poll_interval_s=HOUR_S, owns_engine=True)
        try:
            waiting = asyncio.create_task(queue.claim("worker-a", 5, 2 * WAIT_S))
            await asyncio.sleep(0.05)
            await queue.enqueue([online_job("safety", 1)])
            claimed = await asyncio.wait_for(waiting, WAIT_S)
            assert [d.job.id for d in claimed] == [online_job("safety", 1).id]

            await queue.pause("relevance", "401 from route judge")
            await queue.enqueue([online_job("relevance", 2)])
            waiting = asyncio.create_task(queue.claim("worker-a", 5, 2 * WAIT_S))
            await asyncio.sleep(0.05)
            await queue.resume("relevance")
            claimed = await asyncio.wait_for(waiting, WAIT_S)
            assert [d.job.id for d in claimed] == [online_job("relevance", 2).id]

            waiting = asyncio.create_task(queue.claim("worker-a", 5, 2 * WAIT_S))
            await asyncio.sleep(0.05)
            await queue.close()  # a claim in progress returns empty-handed
            assert await asyncio.wait_for(waiting, WAIT_S) == []
        finally:
            await queue.close()

    run(body)


def test_a_slow_holder_cannot_move_a_job_reclaimed_from_it(open_queue: QueueFactory) -> None:
    async def body() -> None:
        async with opened(open_queue, 2) as (slow, live):
            await slow.enqueue([online_job("safety", 1), online_job("safety", 2)])
            stale = await slow.claim("worker-slow", 2, 0)
            reclaimed = await eventually(lambda: live.reclaim("worker-live", 0.01, 5), lambda d: len(d) == 2, "2 jobs")
            await slow.retry_later(stale[0], 0.0, count_attempt=True)  # a no-op: worker-live holds it now
            await slow.dead_letter(stale[1], "poison")  # a no-op as well
            stats = await stats_of(live, "safety")
            assert (stats.pending, stats.delayed, stats.dead_letters) == (2, 0, 0)
            assert await live.claim("worker-live", 5, 0) == []
            await slow.ack(stale[0])  # an ack is an ack, whoever holds the job: its assessment is committed
            await live.ack(reclaimed[0])  # and the second ack of it finds nothing to do
            await live.retry_later(reclaimed[1], 0.0, count_attempt=False)
            (again,) = await live.claim("worker-live", 5, 0)
            assert (again.job.id, again.deliveries) == (online_job("safety", 2).id, 1)  # a retry is a fresh entry

    run(body)


def test_a_paused_judges_jobs_in_hand_are_not_reclaimed(open_queue: QueueFactory) -> None:
    async def body() -> None:
        async with opened(open_queue) as (queue,):
            await queue.enqueue([online_job("safety", 1)])
            (held,) = await queue.claim("worker-dead", 1, 0)
            await queue.pause("safety", "401 from route judge")
            await asyncio.sleep(0.02)  # idle past min_idle_s below, whatever the clock's resolution
            assert await queue.reclaim("worker-live", 0.01, 5) == []
            await queue.resume("safety")
            (reclaimed,) = await eventually(lambda: queue.reclaim("worker-live", 0.01, 5), bool, "the job")
            assert (reclaimed.job.id, reclaimed.deliveries) == (held.job.id, 2)

    run(body)


def test_a_malformed_row_goes_to_the_dead_letters(open_queue: QueueFactory, migrated_url: str) -> None:
    engine = open_engine(migrated_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                judge_jobs.insert().values(
                    judge="safety", job_id="?", fields='{"kind": "x"}', state="ready", enqueued_at=0
                )
            )
    finally:
        engine.dispose()

    async def body() -> None:
        async with opened(open_queue) as (queue,):
            await queue.enqueue([online_job("safety", 1)])
            assert [d.job.id for d in await drain(queue, "worker-a")] == [online_job("safety", 1).id]
            assert (await stats_of(queue, "safety")).dead_letters == 1

    run(body)
    assert _rows(migrated_url)[0]["dead_reason"].startswith("malformed job: not a judge job")


def _claim_in_process(url: str, start: Any, results: Any) -> None:
    async def claim_all() -> list[str]:
        queue = LocalJobQueue.open(url, poll_interval_s=0.05)
        try:
            start.wait(WAIT_S)
            return [d.job.id for d in await drain(queue, f"process-{multiprocessing.current_process().pid}", 7)]
        finally:
            await queue.close()

    try:
        results.put(asyncio.run(claim_all()))
    except BaseException as exc:
        results.put(repr(exc))
        raise


def test_processes_on_one_store_never_claim_the_same_job(open_queue: QueueFactory, migrated_url: str) -> None:
    async def fill() -> None:
        async with opened(open_queue) as (queue,):
            await queue.enqueue([online_job(f"judge-{n % 4}", n) for n in range(PROCESS_JOBS)])

    run(fill)
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Barrier(PROCESSES), ctx.Queue()
    processes = [ctx.Process(target=_claim_in_process, args=(migrated_url, start, results)) for _ in range(PROCESSES)]
    for process in processes:
        process.start()
    try:
        outcomes = [results.get(timeout=WAIT_S * 2) for _ in processes]
    finally:
        for process in processes:
            process.join(WAIT_S)
    assert [o for o in outcomes if isinstance(o, str)] == []
    every = [job_id for ids in outcomes for job_id in ids]
    assert len(every) == PROCESS_JOBS and len(set(every)) == PROCESS_JOBS
    assert [process.exitcode for process in processes] == [0] * PROCESSES


def test_an_unreachable_store_raises_queue_unavailable_then_recovers(postgres_url: str) -> None:
    open_migrated_engine(postgres_url).dispose()
    with tcp_proxy("127.0.0.1", 5432) as proxy:
        url = postgres_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")

        async def body() -> None:
            queue = LocalJobQueue(open_engine(url), poll_interval_s=0.05, owns_engine=True)
            try:
                await queue.enqueue([online_job("safety", 1), online_job("safety", 2)])
                (held,) = await queue.claim("worker-a", 1, 0)
                proxy.stop()  # the store is down
                for call in (
                    lambda: queue.enqueue([online_job("safety", 3)]),
                    lambda: queue.claim("worker-a", 1, 0),
                    lambda: queue.ack(held),
                    lambda: queue.retry_later(held, 1.0, count_attempt=False),
                    queue.stats,
                ):
                    with pytest.raises(QueueUnavailable, match=r"judge queue's store at postgresql\+psycopg://"):
                        await call()
                proxy.start()  # back, on the same port
                claimed = await eventually(lambda: _claim_or_none(queue), bool, "a claim once the store is back")
                assert [d.job.id for d in claimed] == [online_job("safety", 2).id]  # kept through the outage
                stats = await stats_of(queue, "safety")
                assert (stats.depth, stats.pending) == (2, 2)  # the failed ack left its job in hand
            finally:
                await queue.close()

        run(body)


async def _claim_or_none(queue: LocalJobQueue) -> list[Any]:
    try:
        return await queue.claim("worker-a", 5, 0)
    except QueueUnavailable:
        return []
