"""Our /invocations answers against MLflow's own scoring server, body by body.

For every package kind and body format the same bytes go to a real gateway (uvicorn on loopback)
and to ``mlflow.pyfunc.scoring_server`` for the same package. Where MLflow answers 200 we must
answer 200 with the same predictions. Where MLflow fails, we must fail with the same status and
error code, except for the deliberate differences listed (and documented in docs/compatibility.md).
"""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest

from tests.api.conftest import ServedGateway
from tests.packages import IRIS_COLUMNS, REGRESSOR_COLUMNS

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
REG_ROWS = [r[:3] for r in ROWS]


def _records(columns: list[str], rows: list[list[Any]]) -> list[dict[str, Any]]:
    return [dict(zip(columns, row, strict=True)) for row in rows]


def _csv(columns: list[str], rows: list[list[Any]]) -> bytes:
    lines = [",".join(columns)] + [",".join(str(v) for v in row) for row in rows]
    return ("\n".join(lines) + "\n").encode()


IRIS_BODIES: dict[str, Any] = {
    "split": {"dataframe_split": {"columns": IRIS_COLUMNS, "data": ROWS}},
    "split_with_index": {"dataframe_split": {"columns": IRIS_COLUMNS, "data": ROWS, "index": [7, 8, 9]}},
    "split_reordered_extra": {
        "dataframe_split": {
            "columns": ["extra", *reversed(IRIS_COLUMNS)],
            "data": [["x", *reversed(r)] for r in ROWS],
        }
    },
    "split_ints": {"dataframe_split": {"columns": IRIS_COLUMNS, "data": [[5, 3, 1, 0], [7, 3, 5, 2]]}},
    "records": {"dataframe_records": _records(IRIS_COLUMNS, ROWS)},
    "inputs_columns": {"inputs": {c: [r[i] for r in ROWS] for i, c in enumerate(IRIS_COLUMNS)}},
    "instances_records": {"instances": _records(IRIS_COLUMNS, ROWS)},
    "csv": _csv(IRIS_COLUMNS, ROWS),
    "params_ignored": {"dataframe_split": {"columns": IRIS_COLUMNS, "data": ROWS}, "params": {"x": 1}},
    "unknown_key_ignored": {"dataframe_split": {"columns": IRIS_COLUMNS, "data": ROWS}, "extra": 1},
}

CASES: list[tuple[str, str, Any]] = []
for _kind in ("sklearn_skops", "sklearn_pickle", "sklearn_cloudpickle", "sklearn_proba"):
    CASES += [(_kind, name, body) for name, body in IRIS_BODIES.items()]
CASES += [
    ("onnx_classifier", "inputs_rows", {"inputs": ROWS}),
    ("onnx_classifier", "instances_rows", {"instances": ROWS}),
    ("onnx_classifier", "split_unnamed", {"dataframe_split": {"data": ROWS}}),
    ("onnx_classifier", "split_named", {"dataframe_split": {"columns": IRIS_COLUMNS, "data": ROWS}}),
    ("onnx_classifier", "records", {"dataframe_records": _records(IRIS_COLUMNS, ROWS)}),
    ("onnx_classifier", "inputs_ints", {"inputs": [[5, 3, 1, 0]]}),
    ("onnx_label_only", "inputs_rows", {"inputs": ROWS}),
    ("onnx_regressor", "split", {"dataframe_split": {"columns": REGRESSOR_COLUMNS, "data": REG_ROWS}}),
    ("onnx_regressor", "records", {"dataframe_records": _records(REGRESSOR_COLUMNS, REG_ROWS)}),
    ("onnx_regressor", "csv", _csv(REGRESSOR_COLUMNS, REG_ROWS)),
    ("onnx_multi_input", "split", {"dataframe_split": {"columns": ["a", "b"], "data": [[0.5, 1], [2.0, 3]]}}),
    ("onnx_multi_input", "records", {"dataframe_records": [{"a": 0.5, "b": 1}, {"b": 3, "a": 2.0}]}),
    ("pyfunc_custom", "split", {"dataframe_split": {"columns": ["x"], "data": [[1.0], [2.5]]}}),
    (
        "pyfunc_custom",
        "split_params",
        {"dataframe_split": {"columns": ["x"], "data": [[1.0]]}, "params": {"scale": 3.0}},
    ),
    ("pyfunc_custom", "inputs_params", {"inputs": {"x": [1.0, 2.0]}, "params": {"scale": 2}}),
    ("pyfunc_custom", "records", {"dataframe_records": [{"x": 4.0}]}),
    ("pyfunc_custom", "csv", b"x\n1.5\n2.5\n"),
]


def approx_equal(ours: Any, theirs: Any, path: str = "predictions") -> None:
    if isinstance(theirs, float) or isinstance(ours, float):
        assert isinstance(ours, int | float) and isinstance(theirs, int | float), f"{path}: {ours!r} vs {theirs!r}"
        assert math.isclose(ours, theirs, rel_tol=1e-6, abs_tol=1e-6), f"{path}: {ours!r} != {theirs!r}"
    elif isinstance(theirs, dict):
        assert isinstance(ours, dict) and list(ours) == list(theirs), f"{path}: keys {ours!r} vs {theirs!r}"
        for key in theirs:
            approx_equal(ours[key], theirs[key], f"{path}.{key}")
    elif isinstance(theirs, list):
        assert isinstance(ours, list) and len(ours) == len(theirs), f"{path}: {ours!r} vs {theirs!r}"
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            approx_equal(a, b, f"{path}[{i}]")
    else:
        assert ours == theirs, f"{path}: {ours!r} != {theirs!r}"


def _send(served: ServedGateway, kind: str, body: Any) -> tuple[Any, Any]:
    if isinstance(body, bytes):
        ours = served.invoke(kind, content=body, content_type="text/csv")
        theirs = served.mlflow_invoke(kind, content=body, content_type="text/csv")
    else:
        ours = served.invoke(kind, body)
        theirs = served.mlflow_invoke(kind, body)
    return ours, theirs


@pytest.mark.parametrize(("kind", "name", "body"), CASES, ids=[f"{k}-{n}" for k, n, _ in CASES])
def test_same_answer_as_mlflow(served: ServedGateway, kind: str, name: str, body: Any) -> None:
    ours, theirs = _send(served, kind, body)
    assert theirs.status_code == 200, f"mlflow itself failed on this body: {theirs.text[:300]}"
    assert ours.status_code == 200, ours.text
    assert ours.headers["content-type"] == "application/json"
    assert ours.headers["x-model-name"] == kind
    assert ours.headers["x-model-version"] == "1"
    approx_equal(orjson.loads(ours.content), theirs.json())


ERROR_CASES: list[tuple[str, str, Any, int, str, list[str]]] = [
    # kind, name, body, status, error_code, words the message must contain
    (
        "sklearn_skops",
        "missing_column",
        {"dataframe_split": {"columns": IRIS_COLUMNS[:3], "data": [r[:3] for r in ROWS]}},
        400,
        "INVALID_PARAMETER_VALUE",
        ["petal_width"],
    ),
    (
        "sklearn_skops",
        "string_in_double",
        {"dataframe_split": {"columns": IRIS_COLUMNS, "data": [["a", 3.5, 1.4, 0.2]]}},
        400,
        "BAD_REQUEST",
        ["sepal_length"],
    ),
    (
        "sklearn_skops",
        "null_makes_model_raise",
        {"dataframe_split": {"columns": IRIS_COLUMNS, "data": [[None, 3.5, 1.4, 0.2]]}},
        400,
        "BAD_REQUEST",
        ["evaluating the model"],
    ),
    ("onnx_classifier", "dict_for_unnamed_tensor", {"inputs": {"input": ROWS}}, 400, "BAD_REQUEST", ["dict"]),
    (
        "onnx_classifier",
        "wrong_width",
        {"inputs": [[1.0, 2.0, 3.0]]},
        400,
        "INVALID_PARAMETER_VALUE",
        ["shape"],
    ),
    (
        "pyfunc_custom",
        "bad_param",
        {"dataframe_split": {"columns": ["x"], "data": [[1.0]]}, "params": {"scale": "big"}},
        400,
        "INVALID_PARAMETER_VALUE",
        ["scale"],
    ),
]


@pytest.mark.parametrize(
    ("kind", "name", "body", "status", "code", "words"), ERROR_CASES, ids=[c[1] for c in ERROR_CASES]
)
def test_same_error_as_mlflow(
    served: ServedGateway, kind: str, name: str, body: Any, status: int, code: str, words: list[str]
) -> None:
    ours, theirs = _send(served, kind, body)
    assert theirs.status_code == status
    assert theirs.json()["error_code"] == code
    assert ours.status_code == status, ours.text
    error = orjson.loads(ours.content)
    assert error["error_code"] == code
    for word in words:
        assert word in error["message"]
    assert "Traceback" not in error["message"]
