"""ScriptLink: one pipelined connection per worker that runs the limiter's Lua scripts, the only Redis commands
on a limited /v1 call's path.

Why not redis-py's client for these: each of its commands costs 60-70 us of CPU here (the pool, the retry and
observability layers, packing each argument, its parser) where the round trip itself is ~10 us; a limited call
made two of them (its check, its settlement), which is most of what the Redis-backed check added to a proxied
call (docs/benchmarks.md, "Gateway keys"). Here a command is written at once (RESP packed by ``hiredis``) and its
reply read by one reader task that parses with ``hiredis`` and answers the commands' futures in order, so
concurrent calls share the connection (pipelined) and a settlement need not wait for its reply at all.

The connection is opened (and authenticated, the database selected, TLS) by redis-py's own connection class for
the client's URL; only its socket's streams are used after that. Anything wrong with it (closed, a reply later than
``timeout_s``) drops it: every command waiting fails with ``redis.ConnectionError`` (``TimeoutError`` for the
late one) and the next command opens a new one. A script Redis does not hold yet (``NOSCRIPT``: a restarted or
flushed Redis) is sent whole once and then by its digest again; the scripts it is given are loaded on every
connection it opens, so their first use goes by digest too (a settlement then reaches Redis before the worker's
next check).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from collections.abc import Sequence
from typing import Any

import hiredis
import redis
import redis.asyncio as aioredis

Arg = str | int | float | bytes


class Script:
    """A Lua script and its SHA-1 digest (what ``EVALSHA`` names it by)."""

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()


class ScriptLink:
    """Runs scripts on one pipelined connection to the client's Redis (see the module's docstring)."""

    def __init__(self, client: aioredis.Redis, timeout_s: float, scripts: Sequence[Script] = ()) -> None:
        self._client = client
        self._scripts = scripts  # loaded on every connection it opens
        self._timeout_s = timeout_s
        self._writer: asyncio.StreamWriter | None = None
        self._connection: Any = None  # redis-py's connection whose socket this is
        self._opening: asyncio.Future[None] | None = None
        self._reading: asyncio.Task[None] | None = None
        self._pending: deque[asyncio.Future[Any]] = deque()

    @property
    def connected(self) -> bool:
        return self._writer is not None

    async def run(self, script: Script, keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
        """The script's answer; ``redis.ResponseError`` for an error it raised."""
        if self._writer is None:
            await self._open()
        try:
            async with asyncio.timeout(self._timeout_s):
                try:
                    return await self._send(script, keys, args)
                except redis.ResponseError as exc:
                    if not str(exc).startswith("NOSCRIPT"):
                        raise
                    return await self._send(script, keys, args, whole=True)
        except TimeoutError:
            self._drop(TimeoutError(f"Redis did not answer within {self._timeout_s:g} s"))
            raise

    def send(self, script: Script, keys: Sequence[Arg], args: Sequence[Arg]) -> asyncio.Future[Any]:
        """Send the script without waiting for its answer (on an open link the write is done when this returns,
        so a later command of this worker reaches Redis after it): the future has the answer, or the error."""
        if self._writer is None:
            return asyncio.ensure_future(self.run(script, keys, args))
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def done(first: asyncio.Future[Any], whole: bool = False) -> None:
            if answer.done():
                return
            exc = None if first.cancelled() else first.exception()
            if first.cancelled():
                answer.cancel()
            elif exc is None:
                answer.set_result(first.result())
            elif not whole and isinstance(exc, redis.ResponseError) and str(exc).startswith("NOSCRIPT"):
                try:
                    self._send(script, keys, args, whole=True).add_done_callback(lambda again: done(again, True))
                except redis.ConnectionError as lost:
                    answer.set_exception(lost)
            else:
                answer.set_exception(exc)

        self._send(script, keys, args).add_done_callback(done)
        return answer

    def _send(self, script: Script, keys: Sequence[Arg], args: Sequence[Arg], whole: bool = False) -> Any:
        writer = self._writer
        if writer is None:
            raise redis.ConnectionError("The connection to Redis was closed")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_retrieved)
        command = ("EVAL", script.source) if whole else ("EVALSHA", script.sha)
        writer.write(hiredis.pack_command((*command, len(keys), *keys, *args)))  # type: ignore[arg-type]
        self._pending.append(future)
        return future

    async def _open(self) -> None:
        if self._opening is None:
            self._opening = asyncio.ensure_future(self._connect())
            self._opening.add_done_callback(_retrieved)
        opening = self._opening
        try:
            async with asyncio.timeout(self._timeout_s):
                await asyncio.shield(opening)
        finally:
            if self._opening is opening and opening.done():
                self._opening = None

    async def _connect(self) -> None:
        pool = self._client.connection_pool
        connection: Any = pool.connection_class(**pool.connection_kwargs)  # redis-py's are untyped
        await connection.connect()
        for script in self._scripts:  # so that even a script's first use goes by its digest, in order
            await connection.send_command("SCRIPT", "LOAD", script.source)
            await connection.read_response()
        reader, writer = connection._reader, connection._writer
        if reader is None or writer is None:  # redis-py keeps a connected socket's streams there
            raise redis.ConnectionError("redis-py's connection has no streams after connecting")
        self._connection, self._writer = connection, writer
        self._reading = asyncio.get_running_loop().create_task(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        parser = hiredis.Reader(replyError=redis.ResponseError, protocolError=redis.ConnectionError)
        pending = self._pending
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    raise redis.ConnectionError("Redis closed the connection")
                parser.feed(data)
                while (reply := parser.gets()) is not False:
                    future = pending.popleft()
                    if future.done():  # its caller stopped waiting
                        continue
                    if isinstance(reply, redis.ResponseError):
                        future.set_exception(reply)
                    else:
                        future.set_result(reply)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the link is unusable: every waiting command hears why
            self._drop(exc if isinstance(exc, redis.RedisError | OSError) else redis.ConnectionError(str(exc)))

    def _drop(self, exc: BaseException) -> None:
        """Close the connection; the commands waiting on it fail with ``exc``."""
        writer, self._writer = self._writer, None
        reading, self._reading = self._reading, None
        self._connection = None
        if reading is not None and reading is not asyncio.current_task():
            reading.cancel()
        if writer is not None:
            writer.close()
        pending = self._pending
        while pending:
            future = pending.popleft()
            if not future.done():
                future.set_exception(
                    exc if isinstance(exc, TimeoutError) else redis.ConnectionError(f"Redis connection lost: {exc}")
                )

    async def close(self) -> None:
        reading = self._reading
        self._drop(redis.ConnectionError("closed"))
        if reading is not None:
            await asyncio.gather(reading, return_exceptions=True)


def _retrieved(future: asyncio.Future[Any]) -> None:
    """Marks a future's error as seen: whoever waits on it hears it; one nobody waits for must not be logged as
    "never retrieved" (asyncio's warning)."""
    if not future.cancelled():
        future.exception()
