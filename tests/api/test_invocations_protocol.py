"""The scoring protocol's own errors and routes, on a real gateway: every 4xx names what was wrong."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tests.api.conftest import ServedGateway
from tests.packages import IRIS_COLUMNS

GOOD = {"dataframe_split": {"columns": IRIS_COLUMNS, "data": [[5.1, 3.5, 1.4, 0.2]]}}


def _error(response: Any) -> dict[str, Any]:
    body = orjson.loads(response.content)
    assert set(body) >= {"error_code", "message"}, body
    return dict(body)


@pytest.mark.parametrize(
    ("content", "content_type", "status", "code", "words"),
    [
        (b"{not json", "application/json", 400, "BAD_REQUEST", ["valid JSON"]),
        (b"[1, 2]", "application/json", 400, "BAD_REQUEST", ["list"]),
        (b"{}", "application/json", 400, "BAD_REQUEST", ["dataframe_split", "inputs"]),
        (
            orjson.dumps({"inputs": [[1, 2, 3, 4]], "instances": [[1, 2, 3, 4]]}),
            "application/json",
            400,
            "BAD_REQUEST",
            ["inputs", "instances"],
        ),
        (
            orjson.dumps({"dataframe_split": [[1, 2]]}),
            "application/json",
            400,
            "BAD_REQUEST",
            ["split", "list"],
        ),
        (
            orjson.dumps({"dataframe_split": {"data": [[1]], "rows": 1}}),
            "application/json",
            400,
            "BAD_REQUEST",
            ["rows"],
        ),
        (orjson.dumps({"dataframe_records": {"a": 1}}), "application/json", 400, "BAD_REQUEST", ["records"]),
        (orjson.dumps({**GOOD, "params": [1]}), "application/json", 400, None, ["params"]),
        (orjson.dumps(GOOD), "application/xml", 415, None, ["application/xml"]),
        (orjson.dumps(GOOD), "application/json; charset=latin-1", 415, None, ["UTF-8"]),
        (orjson.dumps(GOOD), "application/json; format=pandas-split", 415, None, ["format"]),
        (b'sepal_length,sepal_width\n1,"2\n', "text/csv", 400, None, []),
    ],
    ids=[
        "malformed",
        "list",
        "no_key",
        "two_keys",
        "split_not_object",
        "split_extra_field",
        "records_object",
        "params_not_object",
        "content_type",
        "charset",
        "ct_param",
        "bad_csv",
    ],
)
def test_protocol_errors(
    served: ServedGateway, content: bytes, content_type: str, status: int, code: str | None, words: list[str]
) -> None:
    response = served.invoke("sklearn_skops", content=content, content_type=content_type)
    assert response.status_code == status, response.text
    error = _error(response)
    if code is not None:
        assert error["error_code"] == code
    for word in words:
        assert word in error["message"], error["message"]
    assert "{not json" not in error["message"]  # bodies are never echoed
    assert response.headers["x-model-name"] == "sklearn_skops"


def test_missing_content_type_is_read_as_json(served: ServedGateway) -> None:
    response = served.invoke("sklearn_skops", GOOD, content_type=None)
    assert response.status_code == 200, response.text
    assert orjson.loads(response.content) == {"predictions": [0]}


def test_default_model_and_version_routes(served: ServedGateway) -> None:
    body = {"inputs": [[5.1, 3.5, 1.4, 0.2]]}
    by_default = served.client.post("/invocations", json=body)
    by_version = served.client.post("/models/onnx_classifier/versions/1/invocations", json=body)
    by_latest = served.client.post("/models/onnx_classifier@latest/invocations", json=body)
    for response in (by_default, by_version, by_latest):
        assert response.status_code == 200, response.text
        assert response.headers["x-model-name"] == "onnx_classifier"
        assert response.headers["x-model-version"] == "1"
    assert by_default.json() == by_version.json() == by_latest.json()
    assert by_default.json()["predictions"]["label"] == [0]


@pytest.mark.parametrize(
    ("path", "status", "words"),
    [
        ("/models/nosuch@champion/invocations", 404, ["nosuch"]),
        ("/models/sklearn_skops@nosuch/invocations", 404, ["nosuch"]),
        ("/models/sklearn_skops/versions/9/invocations", 404, ["9"]),
        ("/models/sklearn_skops/versions/x/invocations", 400, ["x"]),
        ("/models/sklearn_skops/invocations", 404, ["NAME@ALIAS"]),
        ("/nowhere", 404, ["/nowhere"]),
    ],
)
def test_unknown_models_and_paths(served: ServedGateway, path: str, status: int, words: list[str]) -> None:
    response = served.client.post(path, json=GOOD)
    assert response.status_code == status
    error = _error(response)
    for word in words:
        assert word in error["message"]


def test_method_not_allowed_is_json(served: ServedGateway) -> None:
    response = served.client.get("/invocations")
    assert response.status_code == 405
    assert _error(response)["error_code"] == "METHOD_NOT_ALLOWED"


def test_ops_endpoints(served: ServedGateway) -> None:
    ping = served.client.get("/ping")
    assert ping.status_code == 200
    health = served.client.get("/health")
    assert health.status_code == 200, health.text
    assert health.json()["status"] == "ok"
    version = served.client.get("/version").json()
    assert version["version"]
    served.client.post(
        "/models/onnx_regressor@champion/invocations",
        json={"dataframe_split": {"columns": IRIS_COLUMNS[:3], "data": [[1, 2, 3]]}},
    )
    models = served.client.get("/models").json()
    loaded = {(m["name"], m["version"]) for m in models["models"]}
    assert ("onnx_classifier", 1) in loaded and ("onnx_regressor", 1) in loaded
    regressor = next(m for m in models["models"] if m["name"] == "onnx_regressor")
    assert regressor["aliases"] == ["champion", "latest"]
    assert regressor["flavor"] == "onnx"
    assert [c["name"] for c in regressor["signature"]["inputs"]] == IRIS_COLUMNS[:3]
    assert models["default_model"] == "models:/onnx_classifier@champion"
    spec = served.client.get("/openapi.json").json()
    assert "/invocations" in spec["paths"] and "/api/registry/models" in spec["paths"]
