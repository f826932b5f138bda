"""Same-tick batching of inline models through real HTTP: requests that reach a fast model in one event-loop
iteration share one model call (``gateway/serving/tick_batcher.py``), and each still gets exactly its own
answer; a request whose rows make the model raise fails alone; batching off never joins.

Whether two requests land in the same loop iteration depends on the scheduler, so each test sends rounds of
concurrent requests until ``/models`` shows that calls were joined (a bounded wait), and checks every answer
of every round.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.api.batching_gateway import BatchingGateway, batching_gateway, post_concurrently, same_answer
from tests.packages import IRIS_COLUMNS, POISON_X, PackageCache, iris_arrays

MODELS = {
    "iris_tick": "onnx_classifier",  # a tensor signature: named output arrays
    "iris_alone": "onnx_classifier",
    "pair_tick": "onnx_multi_input",  # a column signature: a table out, one record per row
    "pair_alone": "onnx_multi_input",
    "gated_tick": "gated",
}
SETTINGS = {
    "serving.inline_max_us": 1e12,  # every model here runs inline, however slow its warm-up was
    "serving.models": {"iris_alone": {"batching": False}, "pair_alone": {"batching": False}},
}
MAX_ROUNDS = 40
SIZES = [1, 2, 1, 3, 1, 1, 4, 2, 1, 1, 2, 1, 5, 1, 1, 2] * 3  # 48 requests of 1 to 5 rows


@pytest.fixture(scope="module")
def gw(packages: PackageCache, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BatchingGateway]:
    with batching_gateway(packages, tmp_path_factory.mktemp("tick"), MODELS, settings=SETTINGS) as gateway:
        yield gateway


def _iris_body(i: int, n: int) -> dict[str, Any]:
    start = (i * 7) % 140
    rows = [[float(v) for v in row] for row in iris_arrays()[0][start : start + n]]
    if i % 3 == 0:
        return {"dataframe_records": [dict(zip(IRIS_COLUMNS, row, strict=True)) for row in rows]}
    if i % 3 == 1:
        return {"dataframe_split": {"columns": IRIS_COLUMNS, "data": rows}}
    return {"inputs": rows}


def _pair_body(i: int, n: int) -> dict[str, Any]:
    rows = [[0.25 * (i + k), i * 10 + k] for k in range(n)]
    if i % 2:
        return {"dataframe_records": [{"a": a, "b": b} for a, b in rows]}
    return {"dataframe_split": {"columns": ["a", "b"], "data": rows}}


FAMILIES = {
    "iris": (_iris_body, {"dataframe_split": {"columns": IRIS_COLUMNS[:3], "data": [[1.0, 2.0, 3.0]]}}, "3 columns"),
    "pair": (_pair_body, {"dataframe_split": {"columns": ["a", "b"], "data": [[0.5, "two"]]}}, "'b'"),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_concurrent_inline_requests_share_calls_and_each_gets_its_own_answer(gw: BatchingGateway, family: str) -> None:
    make_body, invalid, complaint = FAMILIES[family]
    bodies = [make_body(i, n) for i, n in enumerate(SIZES)]
    alone = [gw.client.post(f"/models/{family}_alone@prod/invocations", json=body) for body in bodies]
    assert all(r.status_code == 200 for r in alone), [r.text for r in alone if r.status_code != 200][:1]
    tick = gw.model(f"{family}_tick")
    assert tick["execution"] == "inline" and gw.model(f"{family}_alone")["execution"] == "inline"
    joined_before = tick["inline_batching"]["joined_requests"]

    path = f"/models/{family}_tick@prod/invocations"
    requests = [(path, body, {}) for body in bodies]
    requests.insert(20, (path, invalid, {}))  # refused before the model: never joins a call
    for _ in range(MAX_ROUNDS):
        answers = post_concurrently(gw.base_url, requests, clients=16)
        bad = answers.pop(20)
        assert bad.status_code == 400 and complaint in bad.json()["message"], bad.text
        for i, (mine, reference) in enumerate(zip(answers, alone, strict=True)):
            assert mine.status_code == 200, (i, mine.text)
            assert same_answer(mine.json(), reference.json()), (i, mine.json(), reference.json())
            assert mine.headers["x-model-name"] == f"{family}_tick" and mine.headers["x-model-version"] == "1"
        stats = gw.model(f"{family}_tick")["inline_batching"]
        if stats["joined_requests"] > joined_before:
            break
    else:
        pytest.fail(f"no two requests shared a call in {MAX_ROUNDS} rounds of {len(requests)}: {stats}")
    assert stats["largest_joined_requests"] >= 2 and stats["largest_joined_rows"] >= 2
    assert stats["reruns"] == 0
    # Batching off: every call alone, and nothing to show.
    assert gw.model(f"{family}_alone")["inline_batching"] is None


def test_a_request_that_makes_the_model_raise_fails_alone(gw: BatchingGateway) -> None:
    path = "/models/gated_tick@prod/invocations"

    def body(x: float) -> dict[str, Any]:
        return {"dataframe_split": {"columns": ["x"], "data": [[x], [x + 0.5]] if x != POISON_X else [[x]]}}

    on_its_own = gw.client.post(path, json=body(POISON_X))
    assert on_its_own.status_code == 400 and "poisoned row" in on_its_own.json()["message"]
    assert gw.model("gated_tick")["execution"] == "inline"
    reruns_before = gw.model("gated_tick")["inline_batching"]["reruns"]
    xs = [POISON_X if i == 11 else float(i) for i in range(32)]
    for _ in range(MAX_ROUNDS):
        answers = post_concurrently(gw.base_url, [(path, body(x), {}) for x in xs], clients=16)
        for x, answer in zip(xs, answers, strict=True):
            if x == POISON_X:
                assert answer.status_code == 400
                assert answer.json() == on_its_own.json()  # the error it gets alone
            else:
                assert answer.status_code == 200, answer.text
                assert answer.json() == {"predictions": [{"y": 2 * x}, {"y": 2 * x + 1.0}]}
        stats = gw.model("gated_tick")["inline_batching"]
        if stats["reruns"] > reruns_before:  # a joined call raised and was rerun request by request
            break
    else:
        pytest.fail(f"the poisoned request never shared a call in {MAX_ROUNDS} rounds: {stats}")
