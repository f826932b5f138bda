"""Overload through real HTTP: past a model's queue bounds requests get 503 + Retry-After at once,
while the model is still busy (so none waits for it); a queued request past its deadline gets 504
while the model is still busy; the deadline header may only shorten the server's; a bad header is a 400.

The model is held busy by a gate file (tests/api/batching_gateway.py), never by timing: every
"at once" below is shown by the answer arriving while the held request has not finished.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.api.batching_gateway import BatchingGateway, batching_gateway, post_concurrently, sample
from tests.packages import PackageCache

MODELS = {"few": "gated", "narrow": "gated", "strict": "gated", "patient": "gated"}
SETTINGS = {
    "serving.models": {
        "few": {"max_queue_requests": 3},
        "narrow": {"max_queue_rows": 5},
        "strict": {"request_timeout_s": 0.3},
    },
}


@pytest.fixture(scope="module")
def gw(packages: PackageCache, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BatchingGateway]:
    with batching_gateway(packages, tmp_path_factory.mktemp("overload"), MODELS, settings=SETTINGS) as gateway:
        yield gateway


def _body(*xs: float) -> dict[str, Any]:
    return {"dataframe_split": {"columns": ["x"], "data": [[x] for x in xs]}}


def _path(name: str) -> str:
    return f"/models/{name}@prod/invocations"


def test_past_the_request_bound_excess_requests_get_503_at_once(gw: BatchingGateway) -> None:
    before = gw.metrics()
    sender = ThreadPoolExecutor(max_workers=1)
    with gw.held("few") as blocker:
        queued = sender.submit(post_concurrently, gw.base_url, [(_path("few"), _body(i), {}) for i in range(3)])
        gw.wait_for("few", lambda e: e["queue"]["requests"] == 3, "three requests queued")
        excess = post_concurrently(gw.base_url, [(_path("few"), _body(10 + i), {}) for i in range(8)])
        assert not blocker.done()  # every excess request was answered while the model was still busy
        for response in excess:
            assert response.status_code == 503, response.text
            assert int(response.headers["retry-after"]) >= 1
            body = response.json()
            assert body["error_code"] == "TEMPORARILY_UNAVAILABLE"
            assert "'few'" in body["message"] and "max_queue_requests=3" in body["message"]
            assert response.headers["x-model-name"] == "few"
    answers = queued.result(timeout=60)
    sender.shutdown()
    assert [r.json() for r in answers] == [{"predictions": [{"y": 2.0 * i}]} for i in range(3)]
    stats = gw.model("few")["stats"]
    assert stats["rejected_queue_full"] == 8 and gw.model("few")["queue"]["requests"] == 0
    after = gw.metrics()
    rejected = ("gateway_rejections_total", {"model": "few", "cause": "queue_full_requests"})
    assert sample(after, rejected[0], **rejected[1]) - sample(before, rejected[0], **rejected[1]) == 8
    status = {"model": "few", "version": "1", "status": "503"}
    assert sample(after, "gateway_requests_total", **status) - sample(before, "gateway_requests_total", **status) == 8


def test_past_the_row_bound_a_request_gets_503_naming_it(gw: BatchingGateway) -> None:
    sender = ThreadPoolExecutor(max_workers=2)
    url = gw.base_url + _path("narrow")
    with gw.held("narrow") as blocker:
        queued = sender.submit(httpx.post, url, json=_body(1, 2, 3, 4), timeout=60)
        gw.wait_for("narrow", lambda e: e["queue"]["rows"] == 4, "four rows queued")
        refused = gw.client.post(_path("narrow"), json=_body(5, 6))
        fits = sender.submit(httpx.post, url, json=_body(7), timeout=60)  # 4 + 1 <= 5: queued
        gw.wait_for("narrow", lambda e: e["queue"]["rows"] == 5, "five rows queued")
        assert not blocker.done()
    assert refused.status_code == 503 and int(refused.headers["retry-after"]) >= 1
    assert "max_queue_rows=5" in refused.json()["message"] and "'narrow'" in refused.json()["message"]
    assert queued.result(timeout=60).status_code == 200 and fits.result(timeout=60).status_code == 200
    sender.shutdown()


def test_header_deadline_gives_504_while_the_model_is_still_busy(gw: BatchingGateway) -> None:
    with gw.held("patient") as blocker:
        late = gw.client.post(_path("patient"), json=_body(1), headers={"X-Request-Timeout-Ms": "200"})
        assert not blocker.done()  # answered when its deadline passed, not when the model got free
    assert late.status_code == 504, late.text
    body = late.json()
    assert body["error_code"] == "DEADLINE_EXCEEDED"
    assert "'patient'" in body["message"] and "deadline of 200 ms" in body["message"]
    assert gw.model("patient")["stats"]["expired"] == 1 and gw.model("patient")["queue"]["requests"] == 0
    assert sample(gw.metrics(), "gateway_rejections_total", model="patient", cause="deadline") >= 1


def test_server_deadline_applies_and_the_header_cannot_extend_it(gw: BatchingGateway) -> None:
    with gw.held("strict") as blocker:
        plain = gw.client.post(_path("strict"), json=_body(1))
        longer = gw.client.post(_path("strict"), json=_body(2), headers={"X-Request-Timeout-Ms": "60000"})
        assert not blocker.done()
    for response in (plain, longer):
        assert response.status_code == 504, response.text
        assert "deadline of 300 ms" in response.json()["message"]
    # An idle model runs a request at once: no deadline to miss.
    assert gw.client.post(_path("strict"), json=_body(3)).json() == {"predictions": [{"y": 6.0}]}


@pytest.mark.parametrize("value", ["soon", "0", "-5", "nan", ""])
def test_a_bad_deadline_header_is_a_400_naming_it(gw: BatchingGateway, value: str) -> None:
    response = gw.client.post(_path("patient"), json=_body(1), headers={"X-Request-Timeout-Ms": value})
    assert response.status_code == 400, response.text
    assert response.json()["error_code"] == "BAD_REQUEST"
    assert "X-Request-Timeout-Ms" in response.json()["message"] and "milliseconds" in response.json()["message"]
