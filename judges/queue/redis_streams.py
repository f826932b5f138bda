"""The judge job queue over Redis Streams (judges/queue/base.py's JobQueue), with redis-py's asyncio client.

Keys, under ``judges.queue.key_prefix`` (``P``, default ``gateway:judges:``):

- ``P stream:<judge>``: one stream per judge, with one consumer group (``workers``); an entry is a job's
  fields (judges/queue/jobs.py) plus ``attempts`` once a counted failure happened;
- ``P delayed:<judge>``: a sorted set of jobs waiting for a retry (score: when, in ms; member: the
  entry's fields as JSON);
- ``P dead:<judge>``: the dead letters, a stream (the job's fields, ``reason``, ``deliveries``,
  ``attempts``, ``dead_at``);
- ``P judges``: the set of judges that have a stream; ``P paused``: a hash judge -> the pause's reason,
  so that every worker process sees a pause at its next claim.

An entry stays in its stream until it is done: ``ack`` is ``XACK`` + ``XDEL`` (one Lua script), so a
stream holds exactly the jobs not yet done and no ``MAXLEN`` trimming is used (trimming would drop
un-acked work). Moves between places are Lua scripts (redis_scripts.py), atomic in Redis, so a job is never
in neither place nor in two: ``retry_later`` (``XACK`` + ``XDEL`` + ``ZADD``), ``dead_letter`` (``XACK`` +
``XDEL`` + ``XADD`` to the dead letters), and the move of due retries back (``XADD`` + ``ZREM``, at each
claim). Each acts only when its ``XACK`` acked the entry: a job that another consumer already finished is not
put back.

Every call is bounded (``socket_timeout`` and an ``asyncio.timeout``): a stalled or unreachable Redis
raises :class:`QueueUnavailable` in about ``timeout_s``, it never hangs a worker or a shipper.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Final, cast

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from judges.queue.base import Delivery, JobsRefused, JudgeQueueStats, QueueUnavailable
from judges.queue.jobs import JudgeJob
from judges.queue.redis_scripts import ACK, DEAD_LETTER, MOVE_DUE, RETRY_LATER, TOUCH

logger = logging.getLogger("judges.queue.redis")

GROUP: Final = "workers"
ATTEMPTS: Final = "attempts"
DEFAULT_PREFIX: Final = "gateway:judges:"
_MOVE_LIMIT: Final = 100  # due retries moved back per judge per claim

_IDLE_POLL_S = 0.1  # a claim on a queue with no judge stream yet looks for one this often
_CLAIM_TURNS = 3  # reads of one claim: the streams' shares, then twice more from those that had more


class RedisStreamsQueue:
    """The JobQueue over Redis Streams; one per process (its connection pool is shared by the workers)."""

    kind: Final = "redis"

    def __init__(self, redis_url: str, *, key_prefix: str = DEFAULT_PREFIX, timeout_s: float = 2.0) -> None:
        self.prefix = key_prefix
        self.timeout_s = timeout_s
        # The socket bound is a backstop behind each call's asyncio.timeout; a blocking read gets its own.
        self._client: aioredis.Redis = aioredis.Redis.from_url(
            redis_url,
            decode_responses=True,
            socket_timeout=timeout_s + 30.0,
            socket_connect_timeout=timeout_s,
            health_check_interval=30,
        )
        self._ack = self._client.register_script(ACK)
        self._retry_later = self._client.register_script(RETRY_LATER)
        self._dead_letter = self._client.register_script(DEAD_LETTER)
        self._move_due = self._client.register_script(MOVE_DUE)
        self._touch = self._client.register_script(TOUCH)
        self._groups: set[str] = set()  # judges whose consumer group this process has made sure of

    # -- keys ---------------------------------------------------------------------------------------

    def stream_key(self, judge: str) -> str:
        return f"{self.prefix}stream:{judge}"

    def delayed_key(self, judge: str) -> str:
        return f"{self.prefix}delayed:{judge}"

    def dead_key(self, judge: str) -> str:
        return f"{self.prefix}dead:{judge}"

    @property
    def judges_key(self) -> str:
        return f"{self.prefix}judges"

    @property
    def paused_key(self) -> str:
        return f"{self.prefix}paused"

    @contextlib.asynccontextmanager
    async def _bounded(self, extra_s: float = 0.0) -> AsyncIterator[None]:
        """One Redis exchange, at most ``timeout_s`` (+ ``extra_s`` for a blocking read); an unreachable
        or stalled Redis is QueueUnavailable."""
        try:
            async with asyncio.timeout(self.timeout_s + extra_s):
                yield
        except (RedisConnectionError, RedisTimeoutError, TimeoutError, OSError) as exc:
            raise QueueUnavailable(f"Redis is unavailable for the judge queue ({type(exc).__name__}: {exc})") from exc

    # -- JobQueue -----------------------------------------------------------------------------------

    async def enqueue(self, jobs: Sequence[JudgeJob]) -> None:
        if not jobs:
            return
        async with self._bounded():
            await self._ensure_groups({job.judge for job in jobs})
            pipe = self._client.pipeline(transaction=False)
            for job in jobs:
                pipe.xadd(self.stream_key(job.judge), job.to_fields())  # type: ignore[arg-type]
            results = await pipe.execute(raise_on_error=False)
        failed = {job.judge for job, result in zip(jobs, results, strict=True) if isinstance(result, Exception)}
        if failed:  # a judge's key that is not a stream (WRONGTYPE): that judge is paused, the others' jobs went
            refused = [job for job in jobs if job.judge in failed]
            error = next(result for result in results if isinstance(result, Exception))
            await self._pause_wrong_types(failed)
            raise JobsRefused(refused, f"{len(refused)} job(s) of {', '.join(sorted(failed))} not queued: {error}")

    async def _ensure_groups(self, judges: set[str]) -> None:
        """The stream and consumer group of each judge (made once per process; ``BUSYGROUP`` is fine)."""
        new = sorted(judges - self._groups)
        if not new:
            return
        pipe = self._client.pipeline(transaction=False)
        pipe.sadd(self.judges_key, *new)
        for judge in new:
            pipe.xgroup_create(self.stream_key(judge), GROUP, id="0", mkstream=True)
        results = await pipe.execute(raise_on_error=False)
        for judge, result in zip(new, results[1:], strict=True):
            if isinstance(result, ResponseError) and "WRONGTYPE" in str(result):
                continue  # not a stream: the read or the append over it pauses that judge (_pause_wrong_types)
            if isinstance(result, Exception) and "BUSYGROUP" not in str(result):
                raise result
            self._groups.add(judge)
        if isinstance(results[0], Exception):
            raise results[0]

    async def _active_judges(self) -> tuple[list[str], dict[str, str]]:
        pipe = self._client.pipeline(transaction=False)
        pipe.smembers(self.judges_key)
        pipe.hgetall(self.paused_key)
        judges, paused = await pipe.execute()
        return sorted(j for j in judges if j not in paused), dict(paused)

    async def _pause_wrong_types(self, judges: set[str]) -> None:
        """Pause each of ``judges`` whose stream or retry key holds another kind of value (someone wrote
        it by hand, or another program shares the prefix): Redis refuses a read over all the judges' streams
        (WRONGTYPE) while one of them is not a stream, so that judge stops and says why; the others go on."""
        ordered = sorted(judges)
        async with self._bounded():
            pipe = self._client.pipeline(transaction=False)
            for judge in ordered:
                pipe.type(self.stream_key(judge))
                pipe.type(self.delayed_key(judge))
            kinds = await pipe.execute()
        for index, judge in enumerate(ordered):
            stream_kind, delayed_kind = kinds[2 * index], kinds[2 * index + 1]
            if stream_kind in ("stream", "none") and delayed_kind in ("zset", "none"):
                continue
            key, kind, wanted = (
                (self.stream_key(judge), stream_kind, "stream")
                if stream_kind not in ("stream", "none")
                else (self.delayed_key(judge), delayed_kind, "sorted set")
            )
            reason = (
                f"The Redis key {key!r} holds a {kind}, not a {wanted}: delete or rename it, then resume the judge."
            )
            logger.error("Judge queue: judge %r paused: %s", judge, reason)
            await self.pause(judge, reason)
            self._groups.discard(judge)

    async def claim(self, consumer: str, count: int, block_s: float) -> list[Delivery]:
        try:
            return await self._claim(consumer, count, block_s)
        except ResponseError as exc:
            if "WRONGTYPE" not in str(exc):
                raise
            active, _ = await self._active_judges_bounded()
            await self._pause_wrong_types(set(active))
            return []

    async def _active_judges_bounded(self) -> tuple[list[str], dict[str, str]]:
        async with self._bounded():
            return await self._active_judges()

    async def _claim(self, consumer: str, count: int, block_s: float) -> list[Delivery]:
        async with self._bounded():
            active, _ = await self._active_judges()
            if active:
                await self._ensure_groups(set(active))
                keys = [key for judge in active for key in (self.delayed_key(judge), self.stream_key(judge))]
                await self._move_due(keys=keys, args=[int(time.time() * 1000), _MOVE_LIMIT])
        if not active:  # no judge has a stream yet (or all are paused): look again until block_s is out
            deadline = time.monotonic() + block_s
            while not active and time.monotonic() < deadline:
                await asyncio.sleep(min(_IDLE_POLL_S, max(0.0, deadline - time.monotonic())))
                async with self._bounded():
                    active, _ = await self._active_judges()
            if not active:
                return []
            block_s = max(0.001, deadline - time.monotonic())
            await self._ensure_groups(set(active))
        # Each stream's share of ``count`` first (a busy judge cannot starve the others); then what is left
        # from the streams that filled their share, without blocking, so that one busy judge among idle ones
        # still fills the claim (the jobs of one claim share their round trips in the worker).
        deliveries: list[Delivery] = []
        streams = active
        for turn in range(_CLAIM_TURNS):
            left = count - len(deliveries)
            share = max(1, -(-left // len(streams)))
            got = await self._read_group(consumer, streams, share, block_s if turn == 0 else None)
            if got is None:
                return deliveries
            for read in got.values():
                deliveries.extend(read)
            streams = [judge for judge in streams if len(got.get(self.stream_key(judge), ())) >= share]
            if not streams or len(deliveries) >= count:
                break
        return deliveries

    async def _read_group(
        self, consumer: str, judges: list[str], share: int, block_s: float | None
    ) -> dict[str, list[Delivery]] | None:
        """Up to ``share`` new entries of each judge's stream (waiting up to ``block_s`` for the first one;
        None: not at all), by stream; None when the consumer groups were gone (made again next time)."""
        try:
            async with self._bounded(block_s or 0.0):
                answer: Any = await self._client.xreadgroup(
                    GROUP,
                    consumer,
                    dict.fromkeys((self.stream_key(judge) for judge in judges), ">"),
                    count=share,
                    block=None if block_s is None else max(1, int(block_s * 1000)),
                )
        except ResponseError as exc:  # NOGROUP: a stream deleted, or a Redis restarted without its data
            if "NOGROUP" not in str(exc):
                raise
            logger.warning("Judge queue: %s; making the consumer groups again", exc)
            self._groups.clear()
            return None
        found: dict[str, list[Delivery]] = {}
        for stream, entries in answer or []:
            read = found.setdefault(stream, [])
            for entry_id, fields in entries:
                delivery = await self._delivery(stream, entry_id, fields, 1)
                if delivery is not None:
                    read.append(delivery)
        return found

    async def _delivery(self, stream: str, entry_id: str, fields: dict[str, Any], deliveries: int) -> Delivery | None:
        """The entry as a Delivery; a malformed entry (no job can be read from it) goes to the dead letters
        at once, as nothing could ever run it, and None is returned."""
        try:
            job = JudgeJob.from_fields(cast("Mapping[str | bytes, Any]", fields))
            attempts = int(fields.get(ATTEMPTS, "0"))
        except (ValueError, TypeError) as exc:
            judge = stream.removeprefix(f"{self.prefix}stream:")
            logger.error("Judge queue: a malformed entry %s in %s goes to the dead letters: %s", entry_id, stream, exc)
            letter = {**fields, "judge": judge, "reason": f"malformed entry: {exc}", "deliveries": str(deliveries)}
            await self._dead(stream, self.dead_key(judge), entry_id, letter)
            return None
        return Delivery(job=job, ref=entry_id, deliveries=deliveries, attempts=attempts)

    async def ack(self, delivery: Delivery) -> None:
        async with self._bounded():
            await self._ack(keys=[self.stream_key(delivery.job.judge)], args=[GROUP, delivery.ref])

    async def ack_many(self, deliveries: Sequence[Delivery]) -> None:
        """One ``XACK`` + ``XDEL`` of several ids per judge's stream, in one pipeline."""
        refs: dict[str, list[str]] = {}
        for delivery in deliveries:
            refs.setdefault(self.stream_key(delivery.job.judge), []).append(delivery.ref)
        if not refs:
            return
        async with self._bounded():
            if len(refs) == 1:
                ((key, ids),) = refs.items()
                await self._ack(keys=[key], args=[GROUP, *ids])
                return
            pipe = self._client.pipeline(transaction=False)
            for key, ids in refs.items():
                await self._ack(keys=[key], args=[GROUP, *ids], client=pipe)
            await pipe.execute()

    async def retry_later(self, delivery: Delivery, delay_s: float, *, count_attempt: bool) -> None:
        job = delivery.job
        fields = job.to_fields()
        attempts = delivery.attempts + (1 if count_attempt else 0)
        if attempts:
            fields[ATTEMPTS] = str(attempts)
        due_ms = int((time.time() + max(0.0, delay_s)) * 1000)
        member = json.dumps(fields, sort_keys=True)
        async with self._bounded():
            await self._retry_later(
                keys=[self.stream_key(job.judge), self.delayed_key(job.judge)],
                args=[GROUP, delivery.ref, due_ms, member],
            )

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        job = delivery.job
        letter = {
            **job.to_fields(),
            "reason": reason,
            "deliveries": str(delivery.deliveries),
            ATTEMPTS: str(delivery.attempts),
        }
        async with self._bounded():
            await self._dead(self.stream_key(job.judge), self.dead_key(job.judge), delivery.ref, letter)

    async def _dead(self, stream: str, dead: str, entry_id: str, letter: dict[str, str]) -> None:
        letter = {**letter, "dead_at": repr(time.time())}
        pairs = [part for name, value in letter.items() for part in (name, value)]
        await self._dead_letter(keys=[stream, dead], args=[GROUP, entry_id, *pairs])

    async def reclaim(self, consumer: str, min_idle_s: float, max_deliveries: int) -> list[Delivery]:
        count = 100
        deliveries: list[Delivery] = []
        async with self._bounded():
            active, _ = await self._active_judges()
            for judge in active:
                stream = self.stream_key(judge)
                start = "0-0"
                while len(deliveries) < count:
                    try:
                        answer = await self._client.xautoclaim(
                            stream, GROUP, consumer, int(min_idle_s * 1000), start_id=start, count=count
                        )
                    except ResponseError as exc:  # NOGROUP: a judge listed before its group was made
                        logger.warning("Judge queue: cannot reclaim from %s: %s", stream, exc)
                        break
                    start, entries = answer[0], answer[1]
                    claimed = [(entry_id, fields) for entry_id, fields in entries if fields]
                    if claimed:
                        counts = await self._delivery_counts(stream, [entry_id for entry_id, _ in claimed])
                        for entry_id, fields in claimed:
                            delivery = await self._delivery(stream, entry_id, fields, counts.get(entry_id, 1))
                            if delivery is not None:
                                deliveries.append(delivery)
                    if start == "0-0":
                        break
        return deliveries

    async def touch(self, consumer: str, deliveries: Sequence[Delivery]) -> None:
        """Keep jobs in hand from looking abandoned: their idle time back to 0 (``XCLAIM ... JUSTID``, which
        leaves the delivery count alone), so a job that runs longer than ``min_idle_s`` is not reclaimed
        from a live worker; only the entries ``consumer`` still holds (checked in the same script)."""
        if not deliveries:
            return
        by_stream: dict[str, list[Any]] = {}
        for delivery in deliveries:
            by_stream.setdefault(self.stream_key(delivery.job.judge), []).append(delivery.ref)
        async with self._bounded():
            for stream, refs in by_stream.items():
                await self._touch(keys=[stream], args=[GROUP, consumer, *refs])

    async def _delivery_counts(self, stream: str, entry_ids: list[str]) -> dict[str, int]:
        """How many times each entry has been delivered (XPENDING's delivery count)."""
        pipe = self._client.pipeline(transaction=False)
        for entry_id in entry_ids:
            pipe.xpending_range(stream, GROUP, min=entry_id, max=entry_id, count=1)
        counts: dict[str, int] = {}
        for rows in await pipe.execute():
            for row in rows:
                counts[row["message_id"]] = int(row["times_delivered"])
        return counts

    async def pause(self, judge: str, reason: str) -> None:
        async with self._bounded():
            await self._client.hset(self.paused_key, judge, reason)

    async def resume(self, judge: str) -> None:
        async with self._bounded():
            await self._client.hdel(self.paused_key, judge)

    async def paused(self) -> dict[str, str]:
        """Every paused judge with its reason."""
        async with self._bounded():
            paused: Any = await self._client.hgetall(self.paused_key)
            return dict(paused)

    async def stats(self) -> list[JudgeQueueStats]:
        async with self._bounded():
            pipe = self._client.pipeline(transaction=False)
            pipe.smembers(self.judges_key)
            pipe.hgetall(self.paused_key)
            judges, paused = await pipe.execute()
            names = sorted(set(judges) | set(paused))
            pipe = self._client.pipeline(transaction=False)
            for judge in names:
                pipe.xlen(self.stream_key(judge))
                pipe.xpending(self.stream_key(judge), GROUP)
                pipe.zcard(self.delayed_key(judge))
                pipe.xlen(self.dead_key(judge))
                pipe.xrange(self.stream_key(judge), count=1)
                pipe.zrange(self.delayed_key(judge), 0, 0)
            results = await pipe.execute(raise_on_error=False)
        now = time.time()
        stats: list[JudgeQueueStats] = []
        for index, judge in enumerate(names):
            length, pending, delayed, dead, first, first_delayed = results[index * 6 : index * 6 + 6]
            length = length if isinstance(length, int) else 0
            pending_count = int(pending["pending"]) if isinstance(pending, dict) else 0
            delayed = delayed if isinstance(delayed, int) else 0
            oldest = _oldest_enqueued(first, first_delayed)
            stats.append(
                JudgeQueueStats(
                    judge=judge,
                    depth=length + delayed,
                    pending=pending_count,
                    delayed=delayed,
                    oldest_age_s=max(0.0, now - oldest) if oldest is not None else 0.0,
                    dead_letters=dead if isinstance(dead, int) else 0,
                    paused=paused.get(judge),
                )
            )
        return stats

    async def dead_letters(self, judge: str, count: int = 100) -> list[dict[str, str]]:
        """The oldest ``count`` dead letters of ``judge`` (their fields)."""
        async with self._bounded():
            entries: Any = await self._client.xrange(self.dead_key(judge), count=count)
            return [dict(fields) for _, fields in entries]

    async def delete_all(self) -> None:
        """Remove every key of this prefix (tests; an operator starting over)."""
        async with self._bounded():
            keys = [key async for key in self._client.scan_iter(match=f"{self.prefix}*", count=500)]
            if keys:
                await self._client.delete(*keys)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._client.aclose()


def _oldest_enqueued(first: Any, first_delayed: Any) -> float | None:
    """The earliest ``enqueued_at`` of the stream's first entry and the first delayed job (an
    approximation of the oldest job not done: both are close to the oldest)."""
    times: list[float] = []
    if isinstance(first, list) and first:
        entry_id, fields = first[0]
        times.append(_float(fields.get("enqueued_at")) or int(str(entry_id).split("-")[0]) / 1000)
    if isinstance(first_delayed, list) and first_delayed:
        with contextlib.suppress(ValueError, TypeError):
            value = _float(json.loads(first_delayed[0]).get("enqueued_at"))
            if value:
                times.append(value)
    return min(times) if times else None


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0
