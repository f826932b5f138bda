"""ScriptLink: one pipelined connection per worker that runs the limiter's Lua scripts, the only Redis commands
on a limited /v1 call's path.

Why not redis-py's client for these: each of its commands costs 60-70 us of CPU here (the pool, the retry and
observability layers, packing each argument, its parser) where the round trip itself is ~10 us; a limited call
made two of them (its check, its settlement), which is most of what the Redis-backed check added to a proxied
call (docs/benchmarks.md, "Gateway keys"). Here a command is written at once (RESP packed by ``hiredis``) and its
reply read by an asyncio protocol that parses with ``hiredis`` as bytes come and answers the commands' futures in
order, so concurrent calls share the connection (pipelined). A settlement is sent with ``CLIENT REPLY SKIP``:
Redis runs it in order and answers nothing, so no reply wakes the worker between calls (its failures show as the
link's: a lost connection, a check that times out).

The connection is opened (and authenticated, the database selected, TLS) by redis-py's own connection class for
the client's URL, and the scripts loaded; its socket is then read by this module's protocol, not redis-py's.
Anything wrong with it drops it, and the next command opens a new one: closed, every command waiting fails with
``redis.ConnectionError``; a reply later than ``timeout_s`` (a watchdog, one timer per connection, looks at the
oldest command waiting; a timer per command cost ~9 us of CPU per round trip), every command waiting fails with
``TimeoutError``. The scripts
the link is given are loaded on every connection it opens (so their first use goes by digest, and a settlement
reaches Redis before the worker's next check); a check that finds them gone (``NOSCRIPT``: SCRIPT FLUSH) opens a
new connection, which loads them again, and is sent whole. A settlement sent between the flush and that check is
lost (its reservation stays counted until it leaves the window; its cost is not added to the key's spend).
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
        self._replies: _Replies | None = None  # the open connection's
        self._opening: asyncio.Future[None] | None = None

    @property
    def connected(self) -> bool:
        return self._replies is not None

    async def run(self, script: Script, keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
        """The script's answer; ``redis.ResponseError`` for an error it raised; ``TimeoutError`` when Redis does not
        answer within ``timeout_s`` of the command (the link's watchdog, not a timer per command)."""
        if self._replies is None:
            await self._open()
        try:
            return await self._send(script, keys, args)
        except redis.ResponseError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
            # Redis lost its scripts (SCRIPT FLUSH): a new connection loads them all again (``send``'s scripts get
            # no answer to say so), and this one goes whole.
            self._drop(redis.ConnectionError("Redis lost the limiter's scripts"))
            await self._open()
            return await self._send(script, keys, args, whole=True)

    def send(self, script: Script, keys: Sequence[Arg], args: Sequence[Arg]) -> asyncio.Future[Any] | None:
        """Send the script and ask Redis for no answer (``CLIENT REPLY SKIP``): on an open link the write is done
        when this returns, so a later command of this worker reaches Redis after it, and no reply wakes this
        worker up (None). On a closed link the script is run as ``run`` does, in a task (its future)."""
        replies = self._replies
        if replies is None:
            return asyncio.ensure_future(self.run(script, keys, args))
        replies.transport.write(
            _SKIP + hiredis.pack_command(("EVALSHA", script.sha, len(keys), *keys, *args))  # type: ignore[arg-type]
        )
        return None

    def _send(self, script: Script, keys: Sequence[Arg], args: Sequence[Arg], whole: bool = False) -> Any:
        replies = self._replies
        if replies is None:
            raise redis.ConnectionError("The connection to Redis was closed")
        loop = replies.loop
        future: asyncio.Future[Any] = loop.create_future()
        command = ("EVAL", script.source) if whole else ("EVALSHA", script.sha)
        replies.transport.write(hiredis.pack_command((*command, len(keys), *keys, *args)))  # type: ignore[arg-type]
        now = loop.time()
        replies.pending.append(future)
        replies.sent.append(now)
        if replies.watchdog is None:
            replies.watchdog = loop.call_at(now + self._timeout_s, self._watch, replies)
        return future

    def _watch(self, replies: _Replies) -> None:
        """The watchdog: the oldest command waiting on ``replies`` is late (no reply within ``timeout_s``: the link is
        dropped, every command waiting fails with TimeoutError), or it is checked again at its deadline. One timer per
        link instead of one per command: a check's round trip costs no timer of its own."""
        replies.watchdog = None
        if replies is not self._replies or not replies.sent:
            return
        deadline = replies.sent[0] + self._timeout_s
        if replies.loop.time() >= deadline:
            self._drop(TimeoutError(f"Redis did not answer within {self._timeout_s:g} s"), replies)
        else:
            replies.watchdog = replies.loop.call_at(deadline, self._watch, replies)

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
        writer = connection._writer  # redis-py keeps a connected socket's streams there
        if writer is None:
            raise redis.ConnectionError("redis-py's connection has no stream after connecting")
        # Every reply asked for has been read: from now on the socket's bytes go to _Replies, not to redis-py.
        transport: asyncio.Transport = writer.transport
        replies = _Replies(self, transport, connection)
        transport.set_protocol(replies)
        self._replies = replies

    def _drop(self, exc: BaseException, replies: _Replies | None = None) -> None:
        """Close the connection (``replies``': only if it is still this link's); the commands waiting on it fail
        with ``exc``."""
        current = self._replies
        if current is None or (replies is not None and replies is not current):
            return
        self._replies = None
        if current.watchdog is not None:
            current.watchdog.cancel()
            current.watchdog = None
        current.sent.clear()
        current.connection._close()  # redis-py's own: closes the socket, and it is not "unclosed" when collected
        pending = current.pending
        while pending:
            future = pending.popleft()
            if not future.done():
                future.set_exception(
                    exc if isinstance(exc, TimeoutError) else redis.ConnectionError(f"Redis connection lost: {exc}")
                )
                future.exception()  # retrieved: a settlement nobody waits for must not be logged

    async def close(self) -> None:
        self._drop(redis.ConnectionError("closed"))


class _Replies(asyncio.Protocol):
    """An open link's socket: its replies parsed as they come, each answering the oldest command waiting."""

    def __init__(self, link: ScriptLink, transport: asyncio.Transport, connection: Any) -> None:
        self.link = link
        self.transport = transport
        self.connection = connection  # kept: the redis-py object the socket came from
        self.loop = asyncio.get_running_loop()
        self.pending: deque[asyncio.Future[Any]] = deque()  # the commands waiting for a reply, oldest first
        self.sent: deque[float] = deque()  # when each was sent (loop time), for the watchdog
        self.watchdog: asyncio.TimerHandle | None = None
        self.parser = hiredis.Reader(replyError=redis.ResponseError, protocolError=redis.ConnectionError)

    def data_received(self, data: bytes) -> None:
        parser, pending = self.parser, self.pending
        parser.feed(data)
        try:
            while (reply := parser.gets()) is not False:
                future = pending.popleft()
                self.sent.popleft()
                if future.done():  # its caller stopped waiting
                    continue
                if isinstance(reply, redis.ResponseError):
                    future.set_exception(reply)
                else:
                    future.set_result(reply)
        except (redis.ConnectionError, IndexError) as exc:  # not Redis's protocol, or a reply nobody asked for
            self.link._drop(exc, self)

    def eof_received(self) -> bool:
        self.link._drop(redis.ConnectionError("Redis closed the connection"), self)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.link._drop(exc or redis.ConnectionError("Redis closed the connection"), self)


_SKIP = hiredis.pack_command(("CLIENT", "REPLY", "SKIP"))  # type: ignore[arg-type]  # no reply to the next command (nor to this one)


def _retrieved(future: asyncio.Future[Any]) -> None:
    """Marks a future's error as seen: whoever waits on it hears it; one nobody waits for must not be logged as
    "never retrieved" (asyncio's warning)."""
    if not future.cancelled():
        future.exception()
