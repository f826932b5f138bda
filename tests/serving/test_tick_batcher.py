"""Same-tick batching on a real inline model, driven on one event loop: requests started in the same loop
iteration (``asyncio.gather``) share one call and each gets the answer it gets alone; calls are capped at
``max_batch_rows``; a lone request does not wait; a caller that leaves does not disturb the others."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from gateway.config import ServingSettings
from gateway.serving.model import LoadedModel, load_model
from gateway.serving.tick_batcher import LONELY_FLUSHES, PROBE_EVERY
from tests.packages import IRIS_COLUMNS, PackageCache, iris_arrays


def _load(packages: PackageCache, kind: str, **serving: Any) -> LoadedModel:
    path = packages.get(kind)  # type: ignore[arg-type]
    model = load_model(kind, 1, str(path), artifact_roots=[packages.root], intra_op_num_threads=1,
                       inline_max_us=1e12, serving=ServingSettings(**serving))  # fmt: skip
    assert model.run_inline
    return model


def _body(i: int, n: int) -> bytes:
    start = (i * 13) % 140
    rows = [[float(v) for v in row] for row in iris_arrays()[0][start : start + n]]
    return orjson.dumps({"dataframe_split": {"columns": IRIS_COLUMNS, "data": rows}})


async def _start_waiting(model: LoadedModel) -> dict[str, int]:
    """Concurrent requests until the model waits for flushes (a quiet one calls at once, and only every
    ``PROBE_EVERY``-th request waits to see whether others arrive with it); its stats then."""
    body = orjson.dumps({"inputs": [[5.1, 3.5, 1.4, 0.2]]}) if "onnx" in model.name else _body(0, 1)
    await asyncio.gather(*(model.invoke(body, "application/json") for _ in range(2 * PROBE_EVERY)))
    stats: dict[str, int] = model.describe()["inline_batching"]
    assert stats["joined_calls"] >= 1, stats
    return stats


def _dump(answer: tuple[Any, bool]) -> bytes:
    return orjson.dumps(answer[0], option=orjson.OPT_SERIALIZE_NUMPY)


SIZES = [1, 3, 2, 1, 5, 1, 1, 4, 2, 1, 1, 6]


def test_one_iteration_shares_one_call_and_each_request_gets_its_own_rows(packages: PackageCache) -> None:
    joined = _load(packages, "sklearn_skops")  # a table in, a column of labels out
    alone = _load(packages, "sklearn_skops", batching=False)
    bodies = [_body(i, n) for i, n in enumerate(SIZES)]

    async def run() -> tuple[list[Any], list[Any], dict[str, int]]:
        expected = [await alone.invoke(b, "application/json") for b in bodies]
        before = await _start_waiting(joined)
        got = await asyncio.gather(*(joined.invoke(b, "application/json") for b in bodies))
        return expected, list(got), before

    expected, got, before = asyncio.run(run())
    assert [_dump(a) for a in got] == [_dump(a) for a in expected]
    stats = joined.describe()["inline_batching"]
    assert stats["joined_calls"] == before["joined_calls"] + 1
    assert stats["joined_requests"] == before["joined_requests"] + len(SIZES)
    assert stats["largest_joined_rows"] == sum(SIZES)
    assert alone.describe()["inline_batching"] is None
    joined.unload()
    alone.unload()


def test_calls_are_capped_at_max_batch_rows(packages: PackageCache) -> None:
    model = _load(packages, "onnx_classifier", max_batch_rows=4)
    bodies = [orjson.dumps({"inputs": [[5.1, 3.5, 1.4, 0.2 + i / 10]] * n}) for i, n in enumerate([1, 2, 1, 3, 2, 1])]

    async def run() -> tuple[list[Any], dict[str, int]]:
        before = await _start_waiting(model)
        return list(await asyncio.gather(*(model.invoke(b, "application/json") for b in bodies))), before

    answers, before = asyncio.run(run())
    assert [len(a[0]["label"]) for a in answers] == [1, 2, 1, 3, 2, 1]
    stats = model.describe()["inline_batching"]
    # In order, at most 4 rows per call: [1, 2, 1] [3] [2, 1]: two joined calls and one alone.
    assert stats["largest_joined_rows"] == 4
    assert stats["joined_calls"] == before["joined_calls"] + 2
    assert stats["joined_requests"] == before["joined_requests"] + 5
    model.unload()


def test_requests_one_at_a_time_call_at_once(packages: PackageCache) -> None:
    model = _load(packages, "onnx_classifier")
    body = orjson.dumps({"inputs": [[5.1, 3.5, 1.4, 0.2]]})

    async def run() -> None:
        for _ in range(PROBE_EVERY * (LONELY_FLUSHES + 2)):
            await model.invoke(body, "application/json")

    asyncio.run(run())
    stats = model.describe()["inline_batching"]
    # Only the probes waited for a flush, each found itself alone, and nothing was joined.
    assert stats["flushes"] == LONELY_FLUSHES + 2 and stats["joined_calls"] == 0
    model.unload()


def test_a_caller_that_leaves_does_not_disturb_the_others(packages: PackageCache) -> None:
    model = _load(packages, "onnx_classifier")
    bodies = [orjson.dumps({"inputs": [[5.1, 3.5, 1.4, 0.2 + i / 10]]}) for i in range(4)]

    async def run() -> tuple[list[Any], dict[str, int]]:
        before = await _start_waiting(model)
        tasks = [asyncio.ensure_future(model.invoke(b, "application/json")) for b in bodies]
        await asyncio.sleep(0)  # every task is now waiting for the flush
        tasks[1].cancel()
        return list(await asyncio.gather(*tasks, return_exceptions=True)), before

    answers, before = asyncio.run(run())
    assert isinstance(answers[1], asyncio.CancelledError)
    for i in (0, 2, 3):
        assert len(answers[i][0]["label"]) == 1
    assert model.describe()["inline_batching"]["joined_requests"] == before["joined_requests"] + 3
    model.unload()


@pytest.mark.parametrize("kind", ["onnx_classifier", "sklearn_skops"])
def test_batching_off_never_waits(packages: PackageCache, kind: str) -> None:
    model = _load(packages, kind, batching=False)
    assert model.tick_batcher is None and model.describe()["inline_batching"] is None
    model.unload()
