"""Coalescer: the calls made in one turn of the event loop, joined into one call of a batch function.

The judge workers run each job as a task of its own (judges/worker/loop.py), so that a slow judge call holds
only its own job; but the store round trips of the jobs of one claim (their traces read, their assessment ids
looked up, their assessments inserted, their acks) would each be a thread hop and a SQLite transaction (a
Redis round trip) per job. A Coalescer gives each job an ``await coalescer(key)`` and makes one batch call of
what every job asked in the same loop turn: the jobs of one claim start together, so they share each round
trip; jobs that arrive while a batch is in flight form the next one (a group commit).

A batch function returns one result per key, in order; a result that is an exception is raised in that
key's caller alone. A batch function that raises fails every caller of the batch with that exception.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

BatchFunction = Callable[[list[K]], Awaitable[Sequence[V | BaseException]]]


class Coalescer(Generic[K, V]):
    """``await coalescer(key)``: ``run`` called once for the keys asked in one loop turn (at most ``limit``)."""

    def __init__(self, run: BatchFunction[K, V], *, limit: int = 500) -> None:
        self._run = run
        self._limit = limit
        self._waiting: list[tuple[K, asyncio.Future[V]]] = []
        self._batches: set[asyncio.Task[None]] = set()

    async def __call__(self, key: K) -> V:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[V] = loop.create_future()
        self._waiting.append((key, future))
        if len(self._waiting) == 1:
            loop.call_soon(self._flush)  # after the tasks already scheduled in this turn have asked too
        return await future

    def _flush(self) -> None:
        waiting, self._waiting = self._waiting, []
        for start in range(0, len(waiting), self._limit):
            task = asyncio.ensure_future(self._batch(waiting[start : start + self._limit]))
            self._batches.add(task)
            task.add_done_callback(self._batches.discard)

    async def _batch(self, waiting: list[tuple[K, asyncio.Future[V]]]) -> None:
        try:
            results = await self._run([key for key, _ in waiting])
        except BaseException as exc:  # every caller of the batch gets it (cancellation: they are cancelled)
            for _, future in waiting:
                if not future.done():
                    if isinstance(exc, asyncio.CancelledError):
                        future.cancel()
                    else:
                        future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), result in zip(waiting, results, strict=True):
            if future.done():  # its caller was cancelled
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
