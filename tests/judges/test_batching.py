"""Coalescer (judges/batching.py): the calls of one event-loop turn in one batch call; each caller gets its
own result or exception; a batch that raises fails each of its callers."""

from __future__ import annotations

import asyncio

import pytest

from judges.batching import Coalescer


def test_the_calls_of_one_turn_share_one_batch_and_later_calls_form_the_next() -> None:
    batches: list[list[int]] = []

    async def double(keys: list[int]) -> list[int | BaseException]:
        batches.append(keys)
        await asyncio.sleep(0)
        return [ValueError(f"odd {k}") if k == 7 else k * 2 for k in keys]

    async def main() -> None:
        coalescer: Coalescer[int, int] = Coalescer(double, limit=4)
        results = await asyncio.gather(*(coalescer(k) for k in range(6)), return_exceptions=True)
        assert results == [0, 2, 4, 6, 8, 10]
        assert batches == [[0, 1, 2, 3], [4, 5]]  # one turn, cut at the limit
        assert await coalescer(3) == 6 and batches[-1] == [3]
        with pytest.raises(ValueError, match="odd 7"):
            await coalescer(7)

    asyncio.run(main())


def test_a_failed_batch_fails_each_caller_and_the_next_batch_runs() -> None:
    calls = 0

    async def flaky(keys: list[str]) -> list[str | BaseException]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("store down")
        return [key.upper() for key in keys]

    async def main() -> None:
        coalescer: Coalescer[str, str] = Coalescer(flaky)
        failed = await asyncio.gather(coalescer("a"), coalescer("b"), return_exceptions=True)
        assert [type(f) for f in failed] == [ConnectionError, ConnectionError]
        assert await asyncio.gather(coalescer("a"), coalescer("b")) == ["A", "B"]
        assert calls == 2

    asyncio.run(main())


def test_a_cancelled_caller_leaves_the_others_their_results() -> None:
    async def slow(keys: list[int]) -> list[int | BaseException]:
        await asyncio.sleep(0.01)
        return keys

    async def main() -> None:
        coalescer: Coalescer[int, int] = Coalescer(slow)
        first = asyncio.create_task(coalescer(1))
        second = asyncio.create_task(coalescer(2))
        await asyncio.sleep(0)
        first.cancel()
        assert await second == 2
        with pytest.raises(asyncio.CancelledError):
            await first

    asyncio.run(main())
