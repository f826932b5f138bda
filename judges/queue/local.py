"""The judge job queue of the embedded default: a table in the gateway's store, no broker to run.

The store is already durable, migrated at start, and shared by everything that must share the queue: the
worker processes of one machine (one SQLite file) and the replicas of a deployment (one PostgreSQL). So
the queue is two tables there (``judge_jobs``, ``judge_queue_pauses``; gateway/store/schema.py), with the
semantics of the Redis Streams queue (judges/queue/base.py). A job's row moves between states::

    enqueue -> ready --claim--> claimed --ack--> deleted
                 ^                 |--retry_later--> delayed --(due: moved back by the next claim)--> ready
                 |                 |--dead_letter--> dead (kept, with its reason, deliveries and attempts)
                 |                 '--reclaim (idle past min_idle_s)--> claimed by another consumer
                 '--(retry_later with no delay)

Claiming is a compare-and-set in one transaction: ``SELECT id ... WHERE state = 'ready' ORDER BY id LIMIT n
FOR UPDATE SKIP LOCKED``, then ``UPDATE ... SET state = 'claimed' WHERE state = 'ready' AND id IN (...)
RETURNING ...``. On SQLite the write transaction (BEGIN IMMEDIATE) holds the file's write lock, so the
processes on one file claim one after another; on PostgreSQL SKIP LOCKED lets replicas claim different rows
at once, and the update's ``state = 'ready'`` is checked again on the locked rows. No two consumers ever
hold one hand-out.

Each claim or reclaim gives its rows a new lease, carried in the Delivery's ``ref`` (``<row id>:<lease>``):
``retry_later`` and ``dead_letter`` change a row only under the lease they were handed, so a consumer that
was merely slow (its job reclaimed by another) cannot move the job from under its new holder. ``ack``
deletes the row whoever holds it: the assessment is committed, the job is done. Acked rows are deleted
rather than marked done so the table stays the size of the outstanding work (claims and stats read it),
and the assessment row is the record of what was done, as a stream keeps nothing of an acked, trimmed entry.

``deliveries`` counts hand-outs since the job was enqueued or last retried (a retry is a fresh entry, as a
job re-added to a stream is), so ``max_deliveries`` counts consumers that died holding it, never transient
retries; ``attempts`` is carried across retries. A paused judge's jobs are neither claimed nor reclaimed.
Times are the wall clock of the process that writes them (epoch ms), so replicas sharing a PostgreSQL
store need clocks that agree to well within ``min_idle_s`` (NTP does). A claim cancelled while its
transaction runs may still commit: its jobs then wait for a reclaim, as a dead consumer's do.

Every store call runs in a thread (``asyncio.to_thread``), a batch in one transaction. ``claim`` with
``block_s`` polls every ``poll_interval_s`` and wakes at once when this process enqueues or resumes (other
processes' enqueues are seen at the next poll). A store that cannot be reached (PostgreSQL down, SQLite
locked past its busy timeout) raises :class:`QueueUnavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final, ParamSpec, TypeVar

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, Row

from gateway.store.engine import begin_read, begin_write
from gateway.store.migrations import open_migrated_engine
from gateway.store.schema import judge_jobs, judge_queue_pauses
from judges.queue.base import Delivery, JudgeQueueStats, QueueUnavailable
from judges.queue.jobs import JudgeJob

logger = logging.getLogger("judges.queue")

READY: Final = "ready"
DELAYED: Final = "delayed"
CLAIMED: Final = "claimed"
DEAD: Final = "dead"
DEFAULT_POLL_INTERVAL_S: Final = 0.25
RECLAIM_BATCH: Final = 100  # rows per reclaim call (XAUTOCLAIM's default COUNT)

_j, _p = judge_jobs, judge_queue_pauses


def _AVAILABLE(now: int) -> sa.ColumnElement[bool]:  # noqa: N802 (reads as the condition it is)
    """Rows a claim could hand out now: ready, or delayed and due (paused judges aside, checked in the claim)."""
    return sa.or_(_j.c.state == READY, sa.and_(_j.c.state == DELAYED, _j.c.visible_at <= now))


_DELIVERY_COLUMNS = (_j.c.id, _j.c.fields, _j.c.deliveries, _j.c.attempts)
P = ParamSpec("P")
T = TypeVar("T")


def _now_ms() -> int:
    return int(time.time() * 1000)


class LocalJobQueue:
    """The :class:`~judges.queue.base.JobQueue` over the store behind ``engine`` (migrated: schema version 6
    or later). ``owns_engine``: :meth:`close` disposes of it (as :meth:`open` does for its own)."""

    kind: Final = "store"

    def __init__(
        self, engine: Engine, *, poll_interval_s: float = DEFAULT_POLL_INTERVAL_S, owns_engine: bool = False
    ) -> None:
        if poll_interval_s <= 0:
            raise ValueError(f"poll_interval_s must be positive, got {poll_interval_s}")
        self._engine = engine
        self._poll_interval_s = poll_interval_s
        self._owns_engine = owns_engine
        self._wakeups = _Wakeups()
        self._closed = False
        self._ack_batch: _AckBatch | None = None  # the acks waiting for the commit in progress
        self._ack_committing: asyncio.Task[None] | None = None

    @classmethod
    def open(cls, uri: str, *, poll_interval_s: float = DEFAULT_POLL_INTERVAL_S) -> LocalJobQueue:
        """A queue on its own engine for the store at ``uri``, migrated (blocking: call it before the loop
        runs, or in a thread). Raises ``DependencyError`` naming the store when it cannot be reached."""
        return cls(open_migrated_engine(uri), poll_interval_s=poll_interval_s, owns_engine=True)

    async def enqueue(self, jobs: Sequence[JudgeJob]) -> None:
        if jobs:
            await self._run(self._enqueue, list(jobs))
            self._wakeups.wake_all()

    async def claim(self, consumer: str, count: int, block_s: float) -> list[Delivery]:
        if count <= 0:
            return []
        deadline = time.monotonic() + max(block_s, 0.0)
        while True:
            # Registered before looking, so an enqueue between the look and the wait still wakes us.
            with self._wakeups.waiter() as woken:
                deliveries = await self._run(self._claim, consumer, count)
                remaining = deadline - time.monotonic()
                if deliveries or self._closed or remaining <= 0:
                    return deliveries
                await asyncio.wait((woken,), timeout=min(self._poll_interval_s, remaining))

    async def ack(self, delivery: Delivery) -> None:
        """Deleted in a group commit: the acks made while the previous batch commits go in one transaction
        (one commit per ack held a busy SQLite store to a few hundred jobs a second); each returns once its
        batch is committed, and a failed batch raises in every ack it held."""
        row_id, _lease = _parse_ref(delivery.ref)
        batch = self._ack_batch
        if batch is None:
            batch = self._ack_batch = _AckBatch()
            batch.task = asyncio.create_task(self._commit_acks(batch, self._ack_committing))
            self._ack_committing = batch.task
        batch.row_ids.append(row_id)
        await asyncio.shield(batch.task)

    async def ack_many(self, deliveries: Sequence[Delivery]) -> None:
        """The acks of one group commit (``ack``)."""
        await asyncio.gather(*(self.ack(delivery) for delivery in deliveries))

    async def _commit_acks(self, batch: _AckBatch, previous: asyncio.Task[None] | None) -> None:
        if previous is not None and not previous.done():
            await asyncio.wait((previous,))  # its failure is its own acks'
        else:
            await asyncio.sleep(0)  # the acks of this loop iteration join
        self._ack_batch = None  # acks from here on go in the next batch
        await self._run(self._write, _j.delete().where(_j.c.id.in_(batch.row_ids)))

    async def retry_later(self, delivery: Delivery, delay_s: float, *, count_attempt: bool) -> None:
        delay_ms = int(delay_s * 1000)
        values: dict[str, Any] = {
            "state": READY if delay_ms <= 0 else DELAYED,
            "visible_at": None if delay_ms <= 0 else _now_ms() + delay_ms,
            "consumer": None,
            "lease": None,
            "claimed_at": None,
            "deliveries": 0,
            "attempts": _j.c.attempts + (1 if count_attempt else 0),
        }
        if await self._run(self._write, self._held(delivery).values(**values)):
            if delay_ms <= 0:
                self._wakeups.wake_all()
        else:
            logger.info("Judge job %s was reclaimed by another consumer: its retry is left to it", delivery.job.id)

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        statement = self._held(delivery).values(state=DEAD, dead_reason=reason, dead_at=_now_ms(), lease=None)
        if not await self._run(self._write, statement):
            logger.info("Judge job %s was reclaimed by another consumer: not dead-lettered", delivery.job.id)

    async def reclaim(self, consumer: str, min_idle_s: float, max_deliveries: int) -> list[Delivery]:
        """Up to :data:`RECLAIM_BATCH` rows per call, longest idle first. Every reclaimed row comes back
        (deliveries + 1); those with ``deliveries > max_deliveries`` are the caller's to dead-letter."""
        return await self._run(self._reclaim, consumer, min_idle_s)

    async def touch(self, consumer: str, deliveries: Sequence[Delivery]) -> None:
        """The jobs ``consumer`` still holds are not idle: their claim time is now (a judge call longer than
        ``min_idle_s`` is not taken from a live worker). Rows reclaimed by another consumer are left alone."""
        held = [(row_id, lease) for row_id, lease in map(_parse_ref, (d.ref for d in deliveries))]
        if held:
            await self._run(self._touch, consumer, held)

    async def pause(self, judge: str, reason: str) -> None:
        await self._run(self._pause, judge, reason)

    async def paused(self) -> dict[str, str]:
        """The paused judges and why."""
        return await self._run(self._paused)

    async def resume(self, judge: str) -> None:
        await self._run(self._write, _p.delete().where(_p.c.judge == judge))
        self._wakeups.wake_all()

    async def stats(self) -> list[JudgeQueueStats]:
        return await self._run(self._stats)

    async def close(self) -> None:
        self._closed = True
        self._wakeups.wake_all()
        if self._owns_engine:
            await asyncio.to_thread(self._engine.dispose)

    # --- in a thread: one transaction each ----------------------------------------------------------

    def _enqueue(self, jobs: list[JudgeJob]) -> None:
        rows = [
            {
                "judge": job.judge,
                "job_id": job.id,
                "fields": orjson.dumps(job.to_fields()).decode(),
                "state": READY,
                "deliveries": 0,
                "attempts": 0,
                "enqueued_at": int(job.enqueued_at * 1000),
            }
            for job in jobs
        ]
        with begin_write(self._engine) as conn:
            conn.execute(_j.insert(), rows)

    def _claim(self, consumer: str, count: int) -> list[Delivery]:
        now = _now_ms()
        with begin_read(self._engine) as conn:  # nothing to hand out: no write lock taken (an idle poll)
            if conn.execute(sa.select(_j.c.id).where(_AVAILABLE(now)).limit(1)).first() is None:
                return []
        with begin_write(self._engine) as conn:
            due = _j.update().where(_j.c.state == DELAYED, _j.c.visible_at <= now)
            conn.execute(due.values(state=READY, visible_at=None))
            return self._hand_out(conn, consumer, now, _j.c.state == READY, _j.c.id, count)

    def _reclaim(self, consumer: str, min_idle_s: float) -> list[Delivery]:
        now = _now_ms()
        idle = sa.and_(_j.c.state == CLAIMED, _j.c.claimed_at <= now - int(min_idle_s * 1000))
        with begin_write(self._engine) as conn:
            return self._hand_out(conn, consumer, now, idle, _j.c.claimed_at, RECLAIM_BATCH)

    def _hand_out(
        self, conn: Connection, consumer: str, now: int, which: sa.ColumnElement[bool], order: Any, count: int
    ) -> list[Delivery]:
        """Give up to ``count`` rows matching ``which`` (of judges not paused) to ``consumer`` under a new
        lease: the compare-and-set that keeps two consumers from holding one hand-out."""
        pick = (
            sa.select(_j.c.id)
            .where(which, _j.c.judge.not_in(sa.select(_p.c.judge)))
            .order_by(order, _j.c.id)
            .limit(count)
            .with_for_update(skip_locked=True, of=_j)
        )
        # Two statements, not UPDATE ... IN (SELECT ... LIMIT): PostgreSQL may run such a subquery more than
        # once and so claim more than ``count`` rows. The picked rows are locked (PostgreSQL) or the whole
        # file is (SQLite) until commit, and the update checks ``which`` again all the same.
        picked = list(conn.execute(pick).scalars())
        if not picked:
            return []
        lease = uuid.uuid4().hex
        claim = (
            _j.update()
            .where(which, _j.c.id.in_(picked))
            .values(consumer=consumer, lease=lease, claimed_at=now, deliveries=_j.c.deliveries + 1, state=CLAIMED)
            .returning(*_DELIVERY_COLUMNS)
        )
        rows = sorted(conn.execute(claim).all(), key=lambda row: row.id)
        deliveries, malformed = [], []
        for row in rows:
            try:
                deliveries.append(_delivery(row, lease))
            except ValueError as exc:  # never written by enqueue: a row edited by hand
                malformed.append({"row_id": row.id, "reason": f"malformed job: {exc}"})
        if malformed:
            where = _j.update().where(_j.c.id == sa.bindparam("row_id"))
            conn.execute(where.values(state=DEAD, dead_reason=sa.bindparam("reason"), dead_at=now), malformed)
        return deliveries

    def _held(self, delivery: Delivery) -> sa.Update:
        """An update of the delivery's row, only while it is still that hand-out (claimed, same lease)."""
        row_id, lease = _parse_ref(delivery.ref)
        return _j.update().where(_j.c.id == row_id, _j.c.state == CLAIMED, _j.c.lease == lease)

    def _write(self, statement: sa.Executable) -> int:
        """Run one statement in a write transaction; the rows it changed."""
        with begin_write(self._engine) as conn:
            return int(conn.execute(statement).rowcount)

    def _touch(self, consumer: str, held: list[tuple[int, str]]) -> None:
        now = _now_ms()
        with begin_write(self._engine) as conn:
            for row_id, lease in held:
                conn.execute(
                    _j.update()
                    .where(_j.c.id == row_id, _j.c.state == CLAIMED, _j.c.lease == lease, _j.c.consumer == consumer)
                    .values(claimed_at=now)
                )

    def _paused(self) -> dict[str, str]:
        with begin_read(self._engine) as conn:
            return {row.judge: row.reason for row in conn.execute(sa.select(_p.c.judge, _p.c.reason))}

    def _pause(self, judge: str, reason: str) -> None:
        with begin_write(self._engine) as conn:
            conn.execute(_p.delete().where(_p.c.judge == judge))
            conn.execute(_p.insert().values(judge=judge, reason=reason, paused_at=_now_ms()))

    def _stats(self) -> list[JudgeQueueStats]:
        counts = sa.select(_j.c.judge, _j.c.state, sa.func.count(), sa.func.min(_j.c.enqueued_at)).group_by(
            _j.c.judge, _j.c.state
        )
        with begin_read(self._engine) as conn:
            by_state = [tuple(row) for row in conn.execute(counts)]
            paused = {row.judge: row.reason for row in conn.execute(sa.select(_p.c.judge, _p.c.reason))}
        now = _now_ms()
        judges = sorted({judge for judge, *_ in by_state} | set(paused))
        stats = []
        for judge in judges:
            states = {state: (n, oldest) for name, state, n, oldest in by_state if name == judge}
            live = [states[s] for s in (READY, DELAYED, CLAIMED) if s in states]
            oldest = min((o for _, o in live), default=None)
            stats.append(
                JudgeQueueStats(
                    judge=judge,
                    depth=sum(n for n, _ in live),
                    pending=states.get(CLAIMED, (0, None))[0],
                    delayed=states.get(DELAYED, (0, None))[0],
                    oldest_age_s=max(0.0, (now - oldest) / 1000) if oldest is not None else 0.0,
                    dead_letters=states.get(DEAD, (0, None))[0],
                    paused=paused.get(judge),
                )
            )
        return stats

    async def _run(self, call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``call`` in a thread; a store that cannot be reached becomes :class:`QueueUnavailable`."""
        try:
            return await asyncio.to_thread(call, *args, **kwargs)
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
            where = self._engine.url.render_as_string(hide_password=True)
            reason = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else type(exc.orig).__name__
            raise QueueUnavailable(f"The judge queue's store at {where} is unavailable: {reason}") from exc


def _delivery(row: Row[Any], lease: str) -> Delivery:
    job = JudgeJob.from_fields(orjson.loads(row.fields))  # orjson.JSONDecodeError is a ValueError
    return Delivery(job=job, ref=f"{row.id}:{lease}", deliveries=row.deliveries, attempts=row.attempts)


class _AckBatch:
    __slots__ = ("row_ids", "task")

    def __init__(self) -> None:
        self.row_ids: list[int] = []
        self.task: asyncio.Task[None]


def _parse_ref(ref: str) -> tuple[int, str]:
    row_id, _, lease = ref.partition(":")
    try:
        return int(row_id), lease
    except ValueError:
        raise ValueError(f"not a local judge queue delivery ref: {ref!r}") from None


class _Wakeups:
    """Claims waiting for jobs, each woken on its own event loop (thread-safe: a queue may be shared by
    loops in several threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: set[asyncio.Future[None]] = set()

    @contextlib.contextmanager
    def waiter(self) -> Iterator[asyncio.Future[None]]:
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._lock:
            self._waiting.add(woken)
        try:
            yield woken
        finally:
            with self._lock:
                self._waiting.discard(woken)

    def wake_all(self) -> None:
        with self._lock:
            waiting, self._waiting = self._waiting, set()
        for woken in waiting:
            with contextlib.suppress(RuntimeError):  # its loop has closed
                woken.get_loop().call_soon_threadsafe(_resolve, woken)


def _resolve(woken: asyncio.Future[None]) -> None:
    if not woken.done():
        woken.set_result(None)
