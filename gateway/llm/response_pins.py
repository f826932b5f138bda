"""Which target created a stored response: the Responses API's follow-ups go there, and nowhere else.

A response lives at the provider account that created it. A follow-up (``previous_response_id``,
``GET|DELETE /v1/responses/{id}``, ``POST .../cancel``, ``GET .../input_items``) sent to another target (a
fallback, a second weighted target) would get "not found", so the proxy remembers ``response id -> (route,
target)`` when a response is created and sends the follow-up to that target only (retries on it, no fallback).

Where the map lives:

- ``ResponsePins``: in memory, bounded (the ``capacity`` most recent responses): one worker process;
- ``SqlitePins``: that, plus a SQLite file shared by the worker processes of one ``gateway serve`` (in its
  shared run directory: several workers and no Redis);
- ``RedisPins``: that, plus Redis (``redis_url``), shared by every replica; entries expire after
  ``ttl_s`` (30 days: how long OpenAI keeps a stored response by default).

The memory map is always asked first. A new id is written before the client can see it (before a whole
answer is sent, before a stream's first events are), so a follow-up never races its pin. A shared store that
fails on write is logged (once per outage) and the pin kept in memory; one that fails on read is a 503.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import redis
import redis.asyncio as aioredis

from gateway.llm.errors import ProxyError

logger = logging.getLogger("gateway.llm")

DEFAULT_CAPACITY = 100_000
DEFAULT_TTL_S = 30 * 24 * 3600
REDIS_PREFIX = "gateway:llm:response:"
REDIS_TIMEOUT_S = 0.5  # one pin read or write (a pin is written before the response reaches the client)
REDIS_PAUSE_S = 5.0  # after a failure, Redis is left alone this long
SQLITE_FILE = "response-pins.db"


@dataclass(frozen=True, slots=True)
class Pin:
    """Where a response was created: the route's name and the target's label (``"<base_url> <model>"``)."""

    route: str
    target: str


class PinsUnavailable(ProxyError):
    status = 503
    error_code = "PINS_UNAVAILABLE"


class ResponsePins:
    """Response id -> Pin, in memory, the ``capacity`` most recently created or used."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self._memory: OrderedDict[str, Pin] = OrderedDict()
        self._capacity = capacity
        self._failing = False

    def _keep(self, response_id: str, pin: Pin) -> None:
        memory = self._memory
        memory[response_id] = pin
        memory.move_to_end(response_id)
        if len(memory) > self._capacity:
            memory.popitem(last=False)

    async def remember(self, response_id: str, pin: Pin) -> None:
        """Pin ``response_id`` (before its id reaches the client)."""
        self._keep(response_id, pin)
        await self._store(response_id, pin)

    async def lookup(self, response_id: str) -> Pin | None:
        pin = self._memory.get(response_id)
        if pin is not None:
            self._memory.move_to_end(response_id)
            return pin
        pin = await self._load(response_id)
        if pin is not None:
            self._keep(response_id, pin)
        return pin

    async def forget(self, response_id: str) -> None:
        """A deleted response: its pin goes too."""
        self._memory.pop(response_id, None)
        await self._remove(response_id)

    async def close(self) -> None:
        pass

    # -- the shared store (none here) ----------------------------------------------------------------------

    async def _store(self, response_id: str, pin: Pin) -> None:
        pass

    async def _load(self, response_id: str) -> Pin | None:
        return None

    async def _remove(self, response_id: str) -> None:
        pass

    def _write_failed(self, where: str, exc: BaseException) -> None:
        if not self._failing:
            logger.warning(
                "Could not write response pins to %s (%s): follow-ups reach their target through this worker only",
                where,
                exc,
            )
        self._failing = True

    def _read_failed(self, where: str, exc: BaseException) -> PinsUnavailable:
        return PinsUnavailable(
            f"Cannot look up which target created this response: {where} is unavailable ({type(exc).__name__}).",
            code="pins_unavailable",
            error_type=type(exc).__name__,
            retry_after_s=1,
        )


class SqlitePins(ResponsePins):
    """Pins in memory and in a SQLite file that every worker process of one server opens (WAL, tiny rows:
    a write is tens of microseconds, done on the event loop)."""

    def __init__(self, path: Path, capacity: int = DEFAULT_CAPACITY, ttl_s: float = DEFAULT_TTL_S) -> None:
        super().__init__(capacity)
        self._path = path
        self._ttl_s = ttl_s
        self._db = sqlite3.connect(path, timeout=2.0, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS pins (id TEXT PRIMARY KEY, route TEXT NOT NULL, target TEXT NOT NULL, "
            "created_at REAL NOT NULL)"
        )
        self._db.execute("DELETE FROM pins WHERE created_at < ?", (time.time() - ttl_s,))

    async def _store(self, response_id: str, pin: Pin) -> None:
        try:
            self._db.execute(
                "INSERT OR REPLACE INTO pins VALUES (?, ?, ?, ?)", (response_id, pin.route, pin.target, time.time())
            )
        except sqlite3.Error as exc:
            self._write_failed(str(self._path), exc)

    async def _load(self, response_id: str) -> Pin | None:
        try:
            row = self._db.execute(
                "SELECT route, target FROM pins WHERE id = ? AND created_at >= ?",
                (response_id, time.time() - self._ttl_s),
            ).fetchone()
        except sqlite3.Error as exc:
            raise self._read_failed(str(self._path), exc) from exc
        return Pin(row[0], row[1]) if row else None

    async def _remove(self, response_id: str) -> None:
        try:
            self._db.execute("DELETE FROM pins WHERE id = ?", (response_id,))
        except sqlite3.Error as exc:
            self._write_failed(str(self._path), exc)

    async def close(self) -> None:
        await super().close()
        self._db.close()


class RedisPins(ResponsePins):
    """Pins in memory and in Redis (``gateway:llm:response:<id>`` = ``route\\ntarget``, expiring after ``ttl_s``).

    A pin is written before the response reaches the client, so Redis is on the answer's path: each call is
    bounded by ``REDIS_TIMEOUT_S``, and after a failure Redis is left alone for ``REDIS_PAUSE_S`` (writes keep
    to this worker's memory, reads of pins it does not hold answer 503 at once), so a stalled Redis costs one
    call the timeout, not every call."""

    def __init__(self, redis_url: str, capacity: int = DEFAULT_CAPACITY, ttl_s: float = DEFAULT_TTL_S) -> None:
        super().__init__(capacity)
        self._client = aioredis.Redis.from_url(
            redis_url, socket_connect_timeout=REDIS_TIMEOUT_S, socket_timeout=REDIS_TIMEOUT_S
        )
        self._ttl_s = int(ttl_s)
        self._paused_until = 0.0

    def _paused(self) -> bool:
        return time.monotonic() < self._paused_until

    def _pause(self) -> None:
        self._paused_until = time.monotonic() + REDIS_PAUSE_S

    async def _store(self, response_id: str, pin: Pin) -> None:
        if self._paused():
            return  # kept in memory (remember did): follow-ups through this worker still find it
        try:
            await self._client.set(REDIS_PREFIX + response_id, f"{pin.route}\n{pin.target}", ex=self._ttl_s)
        except (redis.RedisError, OSError) as exc:
            self._pause()
            self._write_failed("Redis", exc)
        else:
            if self._failing:
                logger.info("Response pins reach Redis again")
            self._failing = False

    async def _load(self, response_id: str) -> Pin | None:
        if self._paused():
            raise self._read_failed("Redis", ConnectionError("not answering a moment ago"))
        try:
            value = await self._client.get(REDIS_PREFIX + response_id)
        except (redis.RedisError, OSError) as exc:
            self._pause()
            raise self._read_failed("Redis", exc) from exc
        if value is None:
            return None
        route, _, target = (value.decode() if isinstance(value, bytes) else str(value)).partition("\n")
        return Pin(route, target)

    async def _remove(self, response_id: str) -> None:
        if self._paused():
            return
        try:
            await self._client.delete(REDIS_PREFIX + response_id)
        except (redis.RedisError, OSError) as exc:
            self._pause()
            self._write_failed("Redis", exc)

    async def close(self) -> None:
        await super().close()
        await self._client.aclose()


def make_pins(redis_url: str | None, shared_dir: Path | None) -> ResponsePins:
    """Redis when configured, else a SQLite file in the workers' shared directory when there is one, else memory."""
    if redis_url:
        return RedisPins(redis_url)
    if shared_dir is not None:
        return SqlitePins(shared_dir / SQLITE_FILE)
    return ResponsePins()
