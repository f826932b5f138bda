"""The Batcher on its own, driven from asyncio with a small real model (a numpy function in the
model's executor thread) that a test can hold busy: joining, splitting, bisection, bounds, deadlines."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from gateway.errors import DeadlineExceeded, ModelPredictError, ServiceUnavailable
from gateway.serving.batch_settings import BatchSettings
from gateway.serving.batcher import Batcher
from gateway.serving.types import Frame

POISON = -1.0


class DoublingModel:
    """y = 2 * x, row by row. Records the rows of every call; raises on a row holding POISON;
    ``hold()`` makes the next call wait until ``release()``."""

    def __init__(self, *, summary: bool = False) -> None:
        self.calls: list[int] = []
        self.params_seen: list[Any] = []
        self._gate = threading.Event()
        self._gate.set()
        self.summary = summary  # answer one number per call instead of one per row

    def hold(self) -> None:
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()

    def __call__(self, data: Any, params: dict[str, Any] | None) -> Any:
        x = data.columns["x"] if isinstance(data, Frame) else data
        self.calls.append(int(x.shape[0]))
        self.params_seen.append(params)
        self._gate.wait(30)
        if (x == POISON).any():
            raise ValueError(f"poisoned row x={POISON}")
        if self.summary:
            return np.array([x.sum()])
        if isinstance(data, Frame):
            return Frame({"y": x * 2.0}, data.nrows)
        return x * 2.0


async def _until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"timed out waiting until {what}")


def _run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(test())


def _batcher(model: DoublingModel, **settings: Any) -> tuple[Batcher, ThreadPoolExecutor]:
    executor = ThreadPoolExecutor(max_workers=1)
    return Batcher(model, executor, BatchSettings(**settings), name="m", version=1), executor


def _submit(batcher: Batcher, data: Any, params: dict[str, Any] | None = None, **kw: Any) -> asyncio.Task[Any]:
    return asyncio.ensure_future(batcher.submit(data, params, started=time.monotonic(), **kw))


def _rows(n: int, start: float = 0.0) -> np.ndarray:
    return (np.arange(n, dtype=np.float64) + start).reshape(n, 1)


async def _busy(batcher: Batcher, model: DoublingModel) -> asyncio.Task[Any]:
    """Hold the model on a first request; returns its task (release the model to finish it)."""
    calls = len(model.calls)
    model.hold()
    blocker = _submit(batcher, _rows(1, 500))
    await _until(lambda: len(model.calls) == calls + 1, "the holding call started")
    return blocker


def test_idle_model_runs_a_request_at_once() -> None:
    async def test() -> None:
        model = DoublingModel()
        batcher, executor = _batcher(model)
        out = await _submit(batcher, _rows(3))
        assert out.tolist() == [[0.0], [2.0], [4.0]]
        assert model.calls == [3]
        assert batcher.stats.runs == 1 and batcher.stats.batched_runs == 0
        executor.shutdown()

    _run(test)


def test_queued_requests_share_one_call_and_get_their_own_rows() -> None:
    async def test() -> None:
        model = DoublingModel()
        batcher, executor = _batcher(model)
        blocker = await _busy(batcher, model)
        sizes = [1, 4, 2, 7, 3]
        tasks = []
        start = 0.0
        for n in sizes:
            tasks.append((n, start, _submit(batcher, _rows(n, start))))
            start += 100
        await _until(lambda: batcher.queued_requests == len(sizes), "all requests queued")
        assert batcher.queued_rows == sum(sizes)
        model.release()
        await blocker
        for n, first, task in tasks:
            assert (await task).tolist() == (_rows(n, first) * 2).tolist()
        assert model.calls == [1, sum(sizes)]  # one call for all five
        assert batcher.stats.largest_batch_requests == 5 and batcher.queued_requests == 0
        executor.shutdown()

    _run(test)


def test_frames_are_joined_and_split_back() -> None:
    async def test() -> None:
        model = DoublingModel()
        batcher, executor = _batcher(model)
        blocker = await _busy(batcher, model)
        frames = [Frame({"x": np.arange(n, dtype=np.float64) + 10 * n}, n) for n in (2, 3, 1)]
        tasks = [_submit(batcher, f) for f in frames]
        await _until(lambda: batcher.queued_requests == 3, "all queued")
        model.release()
        await blocker
        for frame, task in zip(frames, tasks, strict=True):
            out = await task
            assert isinstance(out, Frame) and out.nrows == frame.nrows
            assert out.columns["y"].tolist() == (frame.columns["x"] * 2).tolist()
        assert model.calls == [1, 6]
        executor.shutdown()

    _run(test)


def test_only_compatible_requests_share_a_call() -> None:
    async def test() -> None:
        model = DoublingModel()
        batcher, executor = _batcher(model)
        blocker = await _busy(batcher, model)
        a = _submit(batcher, _rows(2))
        b = _submit(batcher, _rows(2).astype(np.float32))  # another dtype
        c = _submit(batcher, _rows(3), {"scale": 2})  # other params
        d = _submit(batcher, _rows(1, 7))  # joins a
        e = _submit(batcher, np.zeros((2, 3)))  # another width
        await _until(lambda: batcher.queued_requests == 5, "all queued")
        model.release()
        await blocker
        results = await asyncio.gather(a, b, c, d, e)
        assert results[3].tolist() == [[14.0]]
        assert results[1].dtype == np.float32
        # FIFO: a+d first, then b, c and e, each alone.
        assert model.calls == [1, 3, 2, 3, 2]
        assert model.params_seen[3] == {"scale": 2}
        executor.shutdown()

    _run(test)


def test_batch_never_exceeds_max_batch_rows_and_large_requests_are_split() -> None:
    async def test() -> None:
        model = DoublingModel()
        batcher, executor = _batcher(model, max_batch_rows=4)
        out = await _submit(batcher, _rows(10))
        assert out.tolist() == (_rows(10) * 2).tolist()
        assert model.calls == [4, 4, 2]
        assert batcher.stats.split_requests == 1
        blocker = await _busy(batcher, model)
        tasks = [_submit(batcher, _rows(n, 10 * n)) for n in (3, 2, 2, 9)]
        await _until(lambda: batcher.queued_requests == 4, "all queued")
        model.release()
        await blocker
        for n, task in zip((3, 2, 2, 9), tasks, strict=True):
            assert (await task).tolist() == (_rows(n, 10 * n) * 2).tolist()
        assert max(model.calls) <= 4
        assert model.calls[4:] == [3, 4, 4, 4, 1]  # 3 | 2+2 | 4 | 4 | 1 (the 9-row request in chunks)
        executor.shutdown()

    _run(test)


def test_a_poisoned_request_fails_alone_by_bisection() -> None:
    async def test() -> None:
        model = DoublingModel()
        batcher, executor = _batcher(model)
        alone = await asyncio.gather(_submit(batcher, np.array([[POISON]])), return_exceptions=True)
        assert isinstance(alone[0], ModelPredictError)
        blocker = await _busy(batcher, model)
        tasks = [_submit(batcher, np.array([[POISON if i == 13 else float(i)]])) for i in range(32)]
        await _until(lambda: batcher.queued_requests == 32, "all queued")
        model.release()
        await blocker
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for i, result in enumerate(results):
            if i == 13:
                assert isinstance(result, ModelPredictError) and result.message == alone[0].message
            else:
                assert result.tolist() == [[2.0 * i]]
        assert batcher.stats.bisections >= 1
        executor.shutdown()

    _run(test)


def test_outputs_not_one_per_row_fall_back_to_one_request_per_call() -> None:
    async def test() -> None:
        model = DoublingModel(summary=True)
        batcher, executor = _batcher(model, max_batch_rows=4)
        blocker = await _busy(batcher, model)
        tasks = [_submit(batcher, _rows(n, 1)) for n in (1, 2, 3)]
        await _until(lambda: batcher.queued_requests == 3, "all queued")
        model.release()
        await blocker
        sums = [(await t).tolist() for t in tasks]
        assert sums == [[1.0], [3.0], [6.0]]  # each request's own sum
        assert batcher.describe()["row_aligned_outputs"] is False
        # From now on a large request is not split either: it runs whole.
        calls = len(model.calls)
        assert (await _submit(batcher, _rows(10))).tolist() == [45.0]
        assert model.calls[calls:] == [10]
        executor.shutdown()

    _run(test)


def test_a_split_request_whose_chunks_cannot_be_joined_runs_whole() -> None:
    async def test() -> None:
        model = DoublingModel(summary=True)
        batcher, executor = _batcher(model, max_batch_rows=4)
        assert (await _submit(batcher, _rows(10))).tolist() == [45.0]
        assert model.calls == [4, 10]  # the first chunk showed the output is not per row: run whole
        assert batcher.queued_requests == 0 and batcher.queued_rows == 0
        executor.shutdown()

    _run(test)


def test_queue_bounds_refuse_at_once_with_retry_after() -> None:
    async def test() -> None:
        model = DoublingModel()
        batcher, executor = _batcher(model, max_queue_requests=2, max_queue_rows=5)
        blocker = await _busy(batcher, model)
        queued = [_submit(batcher, _rows(2)), _submit(batcher, _rows(2))]
        await _until(lambda: batcher.queued_requests == 2, "two queued")
        with pytest.raises(ServiceUnavailable) as too_many:
            await batcher.submit(_rows(1), None, started=time.monotonic())
        assert "max_queue_requests=2" in too_many.value.message and "'m' version 1" in too_many.value.message
        assert too_many.value.retry_after_s >= 1
        model.release()
        await blocker
        await asyncio.gather(*queued)
        blocker = await _busy(batcher, model)
        first = _submit(batcher, _rows(4))
        await _until(lambda: batcher.queued_rows == 4, "four rows queued")
        with pytest.raises(ServiceUnavailable) as too_many_rows:
            await batcher.submit(_rows(2), None, started=time.monotonic())
        assert "max_queue_rows=5" in too_many_rows.value.message
        model.release()
        await asyncio.gather(blocker, first)
        assert batcher.stats.rejected_queue_full == 2
        executor.shutdown()

    _run(test)


def test_a_queued_request_past_its_deadline_is_answered_while_the_model_is_still_busy() -> None:
    async def test() -> None:
        model = DoublingModel()
        batcher, executor = _batcher(model, request_timeout_s=30.0)
        blocker = await _busy(batcher, model)
        late = _submit(batcher, _rows(1), timeout_s=0.05)
        kept = _submit(batcher, _rows(1, 3))
        with pytest.raises(DeadlineExceeded) as info:
            await late
        assert not blocker.done()  # answered while the model is still held
        assert "deadline of 50 ms" in info.value.message and info.value.status == 504
        assert batcher.queued_requests == 1  # the expired one left the queue
        model.release()
        await blocker
        assert (await kept).tolist() == [[6.0]]
        assert model.calls == [1, 1]  # the expired request never ran
        executor.shutdown()

    _run(test)


def test_batching_off_runs_every_request_alone_in_order() -> None:
    async def test() -> None:
        model = DoublingModel()
        batcher, executor = _batcher(model, batching=False, max_batch_rows=2)
        blocker = await _busy(batcher, model)
        tasks = [_submit(batcher, _rows(n)) for n in (3, 1, 2)]
        await _until(lambda: batcher.queued_requests == 3, "all queued")
        model.release()
        await blocker
        await asyncio.gather(*tasks)
        assert model.calls == [1, 3, 1, 2]  # not joined, not split
        executor.shutdown()

    _run(test)


def test_max_wait_lets_requests_arriving_together_share_a_call() -> None:
    async def test() -> None:
        model = DoublingModel()
        batcher, executor = _batcher(model, max_wait_ms=50.0)
        results = await asyncio.gather(_submit(batcher, _rows(1)), _submit(batcher, _rows(2, 5)))
        assert [r.tolist() for r in results] == [[[0.0]], [[10.0], [12.0]]]
        assert model.calls == [3]
        executor.shutdown()

    _run(test)


def test_a_cancelled_queued_request_leaves_the_queue() -> None:
    async def test() -> None:
        model = DoublingModel()
        batcher, executor = _batcher(model)
        blocker = await _busy(batcher, model)
        gone = _submit(batcher, _rows(5))
        await _until(lambda: batcher.queued_rows == 5, "queued")
        gone.cancel()
        await _until(lambda: batcher.queued_requests == 0, "cancelled request removed")
        assert batcher.queued_rows == 0
        model.release()
        await blocker
        assert model.calls == [1]
        executor.shutdown()

    _run(test)
