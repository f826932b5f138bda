"""Dynamic batching through real HTTP: concurrent requests of different sizes share model calls and
each gets exactly the answer it gets alone; a bad request or a poisoned row fails only its own
request; an oversized request is split and answered whole; settings show in /models with their source.

Batches form deterministically, never by timing: a batched model is configured with
``max_batch_rows`` equal to the rows the test sends and a long ``max_wait_ms``, so it waits until
every request has arrived and then runs them as one call; or a gated model is held busy while
requests queue behind it (see tests/api/batching_gateway.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.api.batching_gateway import (
    BatchingGateway,
    batching_gateway,
    post_concurrently,
    register,
    same_answer,
    sample,
)
from tests.packages import IRIS_COLUMNS, POISON_X, PackageCache, iris_arrays

# Row counts of the concurrent requests: different sizes, 40 requests.
SIZES = [1, 3, 2, 5, 1, 4, 7, 2, 1, 6, 3, 2, 1, 8, 2, 1, 3, 4, 1, 2, 5, 1, 2, 3, 1, 2, 1, 4, 2, 3, 1, 1, 2, 6, 1, 3, 2,
         1, 4, 2]  # fmt: skip
TOTAL = sum(SIZES)
WAIT_FOR_ALL = {"max_batch_rows": TOTAL, "max_wait_ms": 30_000}
ALONE = {"batching": False}
MODELS = {
    "onnx_batched": "onnx_classifier",
    "onnx_alone": "onnx_classifier",
    "onnx_split": "onnx_classifier",
    "sk_batched": "sklearn_skops",
    "sk_alone": "sklearn_skops",
    "pair_batched": "onnx_multi_input",
    "pair_alone": "onnx_multi_input",
    "gated": "gated",
}
SETTINGS = {
    "serving.max_queue_rows": 5000,
    "serving.models": {
        "onnx_batched": WAIT_FOR_ALL, "sk_batched": WAIT_FOR_ALL, "pair_batched": WAIT_FOR_ALL,
        "onnx_alone": ALONE, "sk_alone": ALONE, "pair_alone": ALONE,
    },
}  # fmt: skip


@pytest.fixture(scope="module")
def gw(packages: PackageCache, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BatchingGateway]:
    with batching_gateway(
        packages,
        tmp_path_factory.mktemp("batching"),
        MODELS,
        tags={"onnx_split": {"gateway.max_batch_rows": "4"}},
        settings=SETTINGS,
    ) as gateway:
        yield gateway


def _iris_rows(i: int, n: int) -> list[list[float]]:
    start = (i * 11) % 140
    return [[float(v) for v in row] for row in iris_arrays()[0][start : start + n]]


def _onnx_body(i: int, n: int) -> dict[str, Any]:
    rows = _iris_rows(i, n)
    return {"inputs": rows} if i % 2 else {"instances": rows}


def _table_body(i: int, n: int) -> dict[str, Any]:
    rows = _iris_rows(i, n)
    if i % 2:
        return {"dataframe_split": {"columns": IRIS_COLUMNS, "data": rows}}
    return {"dataframe_records": [dict(zip(IRIS_COLUMNS, row, strict=True)) for row in rows]}


def _pair_body(i: int, n: int) -> dict[str, Any]:
    return {"dataframe_split": {"columns": ["a", "b"], "data": [[0.25 * (i + k), i * 10 + k] for k in range(n)]}}


BODIES = {"onnx": (_onnx_body, {"inputs": [[1.0, 2.0, 3.0]]}),  # one column short
          "sk": (_table_body, {"dataframe_split": {"columns": IRIS_COLUMNS[:3], "data": [[1.0, 2.0, 3.0]]}}),
          "pair": (_pair_body, {"dataframe_split": {"columns": ["a", "b"], "data": [[0.5, "two"]]}})}  # fmt: skip


@pytest.mark.parametrize("family", sorted(BODIES))
def test_concurrent_requests_share_calls_and_each_gets_its_own_answer(gw: BatchingGateway, family: str) -> None:
    make_body, invalid = BODIES[family]
    bodies = [make_body(i, n) for i, n in enumerate(SIZES)]
    # The answers each request gets on its own (a model with batching off, one request at a time).
    alone = [gw.client.post(f"/models/{family}_alone@prod/invocations", json=body) for body in bodies]
    assert all(r.status_code == 200 for r in alone), [r.text for r in alone if r.status_code != 200][:1]

    path = f"/models/{family}_batched@prod/invocations"
    requests = [(path, body, {}) for body in bodies]
    requests.insert(17, (path, invalid, {}))  # one invalid request among them
    before = gw.metrics()
    answers = post_concurrently(gw.base_url, requests)
    after = gw.metrics()

    bad = answers.pop(17)
    assert bad.status_code == 400, bad.text
    assert bad.json()["error_code"] in {"BAD_REQUEST", "INVALID_PARAMETER_VALUE"} and bad.json()["message"]
    for i, (mine, reference) in enumerate(zip(answers, alone, strict=True)):
        assert mine.status_code == 200, (i, mine.text)
        assert same_answer(mine.json(), reference.json()), (i, mine.json(), reference.json())
        assert mine.headers["x-model-name"] == f"{family}_batched"
    entry = gw.model(f"{family}_batched")
    # Every valid request was in one model call (the invalid one never queued).
    assert entry["stats"]["largest_batch_requests"] == len(SIZES)
    assert entry["stats"]["largest_batch_rows"] == TOTAL
    assert entry["stats"]["runs"] == 1 and entry["queue"] == {"requests": 0, "rows": 0, "running": False}

    # /metrics counts the same: 40 answered, 1 refused before the model, one run of 40 requests.
    model = {"model": f"{family}_batched", "version": "1"}

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert delta("gateway_requests_total", **model, status="200") == len(SIZES)
    assert delta("gateway_requests_total", **model, status="400") == 1
    assert delta("gateway_request_duration_seconds_count", **model) == len(SIZES) + 1
    assert delta("gateway_rejections_total", model=f"{family}_batched", cause="bad_request") == 1
    assert delta("gateway_batch_requests_count", **model) == 1
    assert delta("gateway_batch_requests_sum", **model) == len(SIZES)
    assert delta("gateway_batch_rows_sum", **model) == TOTAL
    assert delta("gateway_queue_wait_seconds_count", **model) == len(SIZES)
    assert delta("gateway_model_run_seconds_count", **model) == 1
    assert sample(after, "gateway_queue_depth_requests", **model) == 0


def test_oversized_request_is_split_and_answered_whole(gw: BatchingGateway) -> None:
    body = {"inputs": _iris_rows(3, 30)}
    whole = gw.client.post("/models/onnx_alone@prod/invocations", json=body)
    split = gw.client.post("/models/onnx_split@prod/invocations", json=body)
    assert split.status_code == 200, split.text
    assert same_answer(split.json(), whole.json())
    assert split.json()["predictions"]["label"] == whole.json()["predictions"]["label"]
    assert len(split.json()["predictions"]["label"]) == 30
    entry = gw.model("onnx_split")
    assert entry["batching"]["max_batch_rows"] == {"value": 4, "source": "tag gateway.max_batch_rows"}
    assert entry["stats"]["split_requests"] == 1
    assert entry["stats"]["runs"] == 8 and entry["stats"]["largest_batch_rows"] == 4  # ceil(30 / 4) calls


def test_a_poisoned_request_fails_alone_and_its_batch_mates_succeed(gw: BatchingGateway) -> None:
    path = "/models/gated@prod/invocations"

    def body(x: float) -> dict[str, Any]:
        return {"dataframe_split": {"columns": ["x"], "data": [[x], [x + 0.5]] if x != POISON_X else [[x]]}}

    on_its_own = gw.client.post(path, json=body(POISON_X))
    assert on_its_own.status_code == 400 and "poisoned row" in on_its_own.json()["message"]
    xs = [POISON_X if i == 13 else float(i) for i in range(32)]
    before = gw.model("gated")["stats"]
    sender = ThreadPoolExecutor(max_workers=1)
    with gw.held("gated"):
        sent = sender.submit(post_concurrently, gw.base_url, [(path, body(x), {}) for x in xs])
        gw.wait_for("gated", lambda e: e["queue"]["requests"] == 32, "32 requests queued behind the held one")
        assert not sent.done()
    # The held request is done: the 32 ran next.
    answers = sent.result(timeout=60)
    sender.shutdown()
    for x, answer in zip(xs, answers, strict=True):
        if x == POISON_X:
            assert answer.status_code == 400
            assert answer.json() == on_its_own.json()  # the error it gets alone
        else:
            assert answer.status_code == 200, answer.text
            assert answer.json() == {"predictions": [{"y": 2 * x}, {"y": 2 * x + 1.0}]}
    stats = gw.model("gated")["stats"]
    assert stats["largest_batch_requests"] == 32  # all 32 shared the first call
    assert stats["bisections"] > before["bisections"]


def test_settings_and_their_sources_show_in_models(gw: BatchingGateway) -> None:
    batched = gw.model("onnx_batched")["batching"]
    assert batched["max_batch_rows"] == {"value": TOTAL, "source": "serving.models.onnx_batched.max_batch_rows"}
    assert batched["max_wait_ms"] == {"value": 30_000, "source": "serving.models.onnx_batched.max_wait_ms"}
    assert batched["max_queue_rows"] == {"value": 5000, "source": "serving.max_queue_rows"}
    assert batched["max_queue_requests"] == {"value": 1024, "source": "serving.max_queue_requests"}
    assert batched["request_timeout_s"] == {"value": 60.0, "source": "serving.request_timeout_s"}
    assert gw.model("onnx_alone")["batching"]["batching"] == {
        "value": False,
        "source": "serving.models.onnx_alone.batching",
    }
    assert gw.model("onnx_split")["batching"]["max_batch_rows"]["source"] == "tag gateway.max_batch_rows"
    assert gw.model("gated")["batching"]["batching"] == {"value": True, "source": "serving.batching"}


def test_an_invalid_tag_fails_the_version_and_the_old_one_keeps_serving(gw: BatchingGateway) -> None:
    roots = [gw.artifact_root, gw.artifact_root.parent]
    package = gw.artifact_root / "gated"
    assert register(gw.store_uri, "tagged", package, roots) == 1
    body = {"dataframe_split": {"columns": ["x"], "data": [[1.0]]}}
    deadline = time.monotonic() + 30
    first = gw.client.post("/models/tagged@prod/invocations", json=body)
    while first.status_code == 404 and time.monotonic() < deadline:  # until this worker's view has it
        time.sleep(0.05)
        first = gw.client.post("/models/tagged@prod/invocations", json=body)
    assert first.status_code == 200 and first.headers["x-model-version"] == "1", first.text
    assert register(gw.store_uri, "tagged", package, roots, {"gateway.max_wait_ms": "soon"}) == 2
    failed: list[dict[str, Any]] = []
    while not failed:
        assert time.monotonic() < deadline, "version 2 never showed as failed"
        failed = [f for f in gw.client.get("/models").json()["failed"] if f["name"] == "tagged"]
        time.sleep(0.05)
    assert failed[0]["version"] == 2
    assert "gateway.max_wait_ms" in failed[0]["error"] and "'soon'" in failed[0]["error"]
    still = gw.client.post("/models/tagged@prod/invocations", json=body)
    assert still.status_code == 200 and still.headers["x-model-version"] == "1"
