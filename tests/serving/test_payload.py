"""``/invocations`` bodies: our parse + enforce against MLflow's own scoring server, body by body.

The oracle is ``mlflow.pyfunc.scoring_server.invocations`` running a real ``PyFuncModel`` whose
implementation records what reaches it, so MLflow's JSON/CSV parsing, its serving pre-cast and
its schema enforcement all run exactly as under ``mlflow models serve``. Our side is
``parse_request`` -> ``enforce_input`` -> ``enforce_params``. We compare the values, dtypes and
column order that reach the model. Deliberate differences (docs/compatibility.md) have their own
tests that pin down both behaviours.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any

import mlflow
import numpy as np
import orjson
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from mlflow.models import Model, ModelSignature
from mlflow.pyfunc import PyFuncModel
from mlflow.pyfunc.scoring_server import invocations
from mlflow.types.schema import (
    Array,
    ColSpec,
    Map,
    Object,
    ParamSchema,
    ParamSpec,
    Property,
    Schema,
    TensorSpec,
)
from packaging.version import Version
from sklearn.datasets import load_iris

from gateway.errors import BadRequest, GatewayError, InvalidParameter, UnsupportedMediaType
from gateway.serving.enforcement import enforce_input, enforce_params
from gateway.serving.payload import parse_request
from gateway.serving.signature import parse_signature
from gateway.serving.types import Frame

JSON = "application/json"
CSV = "text/csv"

# --------------------------------------------------------------------------- real data + signatures

_IRIS = load_iris(as_frame=True).frame
IRIS_COLS = list(_IRIS.columns[:4])
IRIS_ROWS = _IRIS.iloc[[0, 50, 100], :4].to_numpy().tolist()  # one row of each species

IRIS = ModelSignature(inputs=Schema([ColSpec("double", c) for c in IRIS_COLS]))
MIXED = ModelSignature(
    inputs=Schema(
        [
            ColSpec("long", "id"),
            ColSpec("string", "name"),
            ColSpec("boolean", "vip"),
            ColSpec("double", "score", required=False),
            ColSpec("float", "ratio"),
            ColSpec("integer", "visits", required=False),
        ]
    )
)
UNNAMED = ModelSignature(inputs=Schema([ColSpec("double"), ColSpec("double")]))
TENSOR = ModelSignature(inputs=Schema([TensorSpec(np.dtype("float32"), (-1, 4))]))
TENSORS = ModelSignature(
    inputs=Schema([TensorSpec(np.dtype("float32"), (-1, 2), "x"), TensorSpec(np.dtype("int64"), (-1,), "y")])
)
COMPLEX = ModelSignature(
    inputs=Schema(
        [
            ColSpec(Array("double"), "v"),
            ColSpec(Object([Property("p", "string"), Property("q", "long", required=False)]), "o"),
            ColSpec(Map("string"), "m", required=False),
        ]
    )
)
PARAMS = ModelSignature(
    inputs=Schema([ColSpec("double", c) for c in IRIS_COLS]),
    params=ParamSchema(
        [
            ParamSpec("temperature", "double", 0.5),
            ParamSpec("max_tokens", "long", 16),
            ParamSpec("stop", "string", ["\n"], (-1,)),
            ParamSpec("greedy", "boolean", False),
            ParamSpec("since", "datetime", "2024-01-01"),
        ]
    ),
)
CHAT = ModelSignature(
    inputs=Schema([ColSpec(Array(Object([Property("role", "string"), Property("content", "string")])), "messages")]),
    params=ParamSchema([ParamSpec("temperature", "double", 0.1), ParamSpec("max_tokens", "long", 64)]),
)


# --------------------------------------------------------------------------- the two pipelines


class _Recorder:
    """A real pyfunc model implementation that records what MLflow hands it."""

    def predict(self, data: Any, params: dict[str, Any] | None = None) -> list[int]:
        self.seen = (data, params)
        return [0]


def run_mlflow(sig: ModelSignature | None, body: bytes | str, content_type: str) -> tuple[Any, Any]:
    """MLflow's scoring server on ``body``; raises MlflowException, or GatewayError-free 415 tuples."""
    recorder = _Recorder()
    model = PyFuncModel(model_meta=Model(signature=sig), model_impl=recorder)
    result = invocations(body, content_type, model, model.metadata.get_input_schema())
    if result.status != 200:
        return ("status", result.status, result.response)
    return recorder.seen


def run_ours(sig: ModelSignature | None, body: bytes | str, content_type: str | None) -> tuple[Any, Any]:
    ours = parse_signature(sig.to_dict()) if sig is not None else None
    raw = body.encode() if isinstance(body, str) else body
    parsed = parse_request(raw, content_type, ours)
    data = enforce_input(parsed.data, ours.inputs if ours else None)
    params = enforce_params(parsed.params, ours.params if ours else None)
    return data, params


def plain(value: Any) -> Any:
    """Comparable Python values: numpy -> Python, NaN/None -> None, lists and dicts walked."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, pd.Timestamp):
        return value.value
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def _dtype(dtype: Any) -> str:
    if isinstance(dtype, pd.StringDtype) or np.dtype(dtype).kind == "O":
        return "object"
    return np.dtype(dtype).str


def _column(values: Any, dtype: Any) -> tuple[str, list[Any]]:
    kind = _dtype(dtype)
    if kind.endswith("M8[ns]"):
        return kind, np.asarray(values, dtype="datetime64[ns]").astype("int64").tolist()
    return kind, plain(list(values))


def normalise(data: Any) -> Any:
    """What reached the model, in one comparable shape for pandas and for our Frame."""
    if isinstance(data, pd.DataFrame):
        return ("frame", [(c, *_column(data[c].tolist(), data[c].dtype)) for c in data.columns])
    if isinstance(data, Frame):
        return ("frame", [(c, *_column(a.tolist(), a.dtype)) for c, a in data.columns.items()])
    if isinstance(data, np.ndarray):
        return ("array", _dtype(data.dtype), data.shape, plain(data))
    if isinstance(data, dict):
        return ("dict", {k: normalise(v) for k, v in data.items()})
    return ("value", plain(data))


def normalise_params(params: Any) -> Any:
    return plain(params)


def assert_same(sig: ModelSignature | None, body: Any, content_type: str = JSON) -> Any:
    """Both pipelines accept ``body`` and hand the model the same data and params."""
    text = body if isinstance(body, str) else json.dumps(body)
    theirs_data, theirs_params = run_mlflow(sig, text, content_type)
    ours_data, ours_params = run_ours(sig, text, content_type)
    assert normalise(ours_data) == normalise(theirs_data)
    assert normalise_params(ours_params) == normalise_params(theirs_params)
    return ours_data


def mlflow_error(sig: ModelSignature | None, body: Any, content_type: str = JSON) -> MlflowException:
    text = body if isinstance(body, str | bytes) else json.dumps(body)
    with pytest.raises(MlflowException) as info:
        run_mlflow(sig, text, content_type)
    return info.value


def our_error(sig: ModelSignature | None, body: Any, content_type: str | None = JSON) -> GatewayError:
    text = body if isinstance(body, str | bytes) else json.dumps(body)
    with pytest.raises(GatewayError) as info:
        run_ours(sig, text, content_type)
    return info.value


def split(columns: list[Any] | None, rows: list[list[Any]], **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"data": rows, **extra}
    if columns is not None:
        body["columns"] = columns
    return {"dataframe_split": body}


def records(columns: list[str], rows: list[list[Any]]) -> dict[str, Any]:
    return {"dataframe_records": [dict(zip(columns, row, strict=True)) for row in rows]}


def to_csv(columns: list[str], rows: list[list[Any]]) -> str:
    return pd.DataFrame(rows, columns=columns).to_csv(index=False)


# --------------------------------------------------------------------------- parity: column schemas

IRIS_BODIES = {
    "split": split(IRIS_COLS, IRIS_ROWS),
    "split-one-row": split(IRIS_COLS, IRIS_ROWS[:1]),
    "split-shuffled-extra": split(
        [IRIS_COLS[2], "species", IRIS_COLS[0], IRIS_COLS[3], IRIS_COLS[1]],
        [[r[2], "setosa", r[0], r[3], r[1]] for r in IRIS_ROWS],
    ),
    "split-json-ints": split(IRIS_COLS, [[5, 3, 1, 0], [6, 3, 4, 1]]),
    "split-null-is-nan": split(IRIS_COLS, [[5.1, None, 1.4, 0.2]]),
    "split-with-index": split(IRIS_COLS, IRIS_ROWS, index=[10, 11, 12]),
    "split-empty": split(IRIS_COLS, []),
    "records": records(IRIS_COLS, IRIS_ROWS),
    "records-missing-key-is-nan": {
        "dataframe_records": [
            dict(zip(IRIS_COLS, IRIS_ROWS[0], strict=True)),
            dict(zip(IRIS_COLS[1:], IRIS_ROWS[1][1:], strict=True)),
        ]
    },
    "inputs-columns": {"inputs": {c: [r[i] for r in IRIS_ROWS] for i, c in enumerate(IRIS_COLS)}},
    "inputs-one-row-scalars": {"inputs": dict(zip(IRIS_COLS, IRIS_ROWS[0], strict=True))},
    "inputs-records": {"inputs": [dict(zip(IRIS_COLS, r, strict=True)) for r in IRIS_ROWS]},
    "instances-records": {"instances": [dict(zip(IRIS_COLS, r, strict=True)) for r in IRIS_ROWS]},
    "instances-columns": {"instances": {c: [r[i] for r in IRIS_ROWS] for i, c in enumerate(IRIS_COLS)}},
    "unknown-keys-ignored": split(IRIS_COLS, IRIS_ROWS) | {"extra": 1, "columns": ["x"]},
}


@pytest.mark.parametrize("body", IRIS_BODIES.values(), ids=IRIS_BODIES.keys())
def test_iris_json_bodies_match_mlflow(body: dict[str, Any]) -> None:
    assert_same(IRIS, body)


def test_iris_split_reaches_model_in_schema_order_as_float64() -> None:
    data = assert_same(IRIS, IRIS_BODIES["split-shuffled-extra"])
    assert list(data.columns) == IRIS_COLS
    assert all(a.dtype == np.float64 for a in data.columns.values())
    assert data.columns[IRIS_COLS[0]].tolist() == [r[0] for r in IRIS_ROWS]


def test_json_nan_literal_matches_mlflow() -> None:
    # MLflow's own client writes NaN for missing values; orjson refuses it, so we fall back.
    columns = json.dumps(IRIS_COLS)
    body = '{"dataframe_split": {"columns": ' + columns + ', "data": [[NaN, 3.0, Infinity, 0.2]]}}'
    data = assert_same(IRIS, body)
    assert math.isnan(data.columns[IRIS_COLS[0]][0])


MIXED_COLS = ["id", "name", "vip", "score", "ratio", "visits"]
MIXED_ROWS = [[1, "ada", True, 0.5, 0.25, 3], [2, "bob", False, None, 1.5, 7]]
MIXED_BODIES = {
    "split": split(MIXED_COLS, MIXED_ROWS),
    "split-without-optional": split(["ratio", "vip", "name", "id"], [[0.25, True, "ada", 1]]),
    "split-empty": split(MIXED_COLS, []),
    "split-whole-floats-into-long": split(["id", "name", "vip", "ratio"], [[3.0, "x", False, 1]]),
    "split-null-string": split(["id", "name", "vip", "ratio"], [[3, None, False, 1.0]]),
    "split-number-in-string-column": split(["id", "name", "vip", "ratio"], [[3, 42, False, 1.0]]),
    "records": records(MIXED_COLS, MIXED_ROWS),
    "inputs-columns": {"inputs": {c: [r[i] for r in MIXED_ROWS] for i, c in enumerate(MIXED_COLS)}},
    "inputs-records": {"inputs": [dict(zip(MIXED_COLS, r, strict=True)) for r in MIXED_ROWS]},
    "instances-records": {"instances": [dict(zip(MIXED_COLS, r, strict=True)) for r in MIXED_ROWS]},
}


@pytest.mark.parametrize("body", MIXED_BODIES.values(), ids=MIXED_BODIES.keys())
def test_mixed_json_bodies_match_mlflow(body: dict[str, Any]) -> None:
    assert_same(MIXED, body)


def test_mixed_dtypes_reaching_the_model() -> None:
    data = assert_same(MIXED, MIXED_BODIES["split"])
    dtypes = {k: v.dtype for k, v in data.columns.items()}
    assert dtypes == {
        "id": np.dtype("int64"),
        "name": np.dtype(object),
        "vip": np.dtype(bool),
        "score": np.dtype("float64"),
        "ratio": np.dtype("float32"),
        "visits": np.dtype("int32"),
    }


UNNAMED_BODIES = {
    "split-no-columns": split(None, [[1.5, 2.0], [3.0, 4.5]]),
    "split-named-columns-kept": split(["a", "b"], [[1.5, 2], [3, 4.5]]),
    "split-extra-column-dropped": split(None, [[1.5, 2.0, 9.0]]),
    "inputs-rows": {"inputs": [[1.5, 2.0], [3.0, 4.5]]},
    "instances-rows": {"instances": [[1.5, 2], [3, 4.5]]},
}


@pytest.mark.parametrize("body", UNNAMED_BODIES.values(), ids=UNNAMED_BODIES.keys())
def test_unnamed_column_bodies_match_mlflow(body: dict[str, Any]) -> None:
    assert_same(UNNAMED, body)


COMPLEX_ROWS = [
    {"v": [1.5, 2.0], "o": {"p": "x"}, "m": {"a": "b"}},
    {"v": [], "o": {"p": "y", "q": 3}, "m": {}},
]
COMPLEX_BODIES = {
    "records": {"dataframe_records": COMPLEX_ROWS},
    "split": split(["v", "o", "m"], [[r["v"], r["o"], r["m"]] for r in COMPLEX_ROWS]),
    "records-without-optional-map": {"dataframe_records": [{"v": [0.5], "o": {"p": "z"}}]},
    "inputs-records": {"inputs": COMPLEX_ROWS},
    "inputs-one-row": {"inputs": COMPLEX_ROWS[0]},
}


@pytest.mark.parametrize("body", COMPLEX_BODIES.values(), ids=COMPLEX_BODIES.keys())
def test_complex_column_bodies_match_mlflow(body: dict[str, Any]) -> None:
    assert_same(COMPLEX, body)


# --------------------------------------------------------------------------- parity: tensors

TENSOR_BODIES = {
    "inputs-rows": {"inputs": IRIS_ROWS},
    "inputs-json-ints": {"inputs": [[5, 3, 1, 0]]},
    "instances-rows": {"instances": IRIS_ROWS},
    "split-four-columns": split(IRIS_COLS, IRIS_ROWS),
    "split-list-cells": split(["features"], [[r] for r in IRIS_ROWS]),
    "records-four-keys": records(IRIS_COLS, IRIS_ROWS),
}


@pytest.mark.parametrize("body", TENSOR_BODIES.values(), ids=TENSOR_BODIES.keys())
def test_tensor_bodies_match_mlflow(body: dict[str, Any]) -> None:
    data = assert_same(TENSOR, body)
    assert isinstance(data, np.ndarray) and data.dtype == np.float32 and data.shape[1] == 4


TENSORS_BODIES = {
    "inputs-dict": {"inputs": {"x": [[1, 2], [3.5, 4]], "y": [7, 8]}},
    "instances-records": {"instances": [{"x": [1, 2], "y": 7}, {"x": [3.5, 4], "y": 8}]},
    "split-list-cells": split(["y", "x"], [[7, [1, 2]], [8, [3.5, 4]]]),
    "records": {"dataframe_records": [{"x": [1, 2], "y": 7}, {"x": [3.5, 4], "y": 8}]},
    "inputs-extra-key-dropped": {"inputs": {"x": [[1, 2]], "y": [7], "z": [1]}},
}


@pytest.mark.parametrize("body", TENSORS_BODIES.values(), ids=TENSORS_BODIES.keys())
def test_named_tensor_bodies_match_mlflow(body: dict[str, Any]) -> None:
    data = assert_same(TENSORS, body)
    assert list(data) == ["x", "y"]
    assert data["x"].dtype == np.float32 and data["y"].dtype == np.int64


# --------------------------------------------------------------------------- parity: no signature

UNTYPED_BODIES = {
    "split": split(
        ["i", "f", "s", "b", "mixed", "nulls"], [[1, 1.5, "a", True, 1, None], [2, 2, "b", False, None, None]]
    ),
    "records-missing-key": {"dataframe_records": [{"a": 1, "b": "x"}, {"a": 2}]},
    "inputs-list": {"inputs": [[1, 2], [3, 4]]},
    "inputs-dict": {"inputs": {"a": [1, 2], "b": ["x", "y"]}},
    "inputs-scalar": {"inputs": 3.5},
    "instances-records": {"instances": [{"a": 1, "b": [1, 2]}, {"a": 2, "b": [3, 4]}]},
    "instances-list": {"instances": [1, 2, 3]},
}


@pytest.mark.parametrize("body", UNTYPED_BODIES.values(), ids=UNTYPED_BODIES.keys())
def test_bodies_without_signature_match_mlflow(body: dict[str, Any]) -> None:
    assert_same(None, body)


# --------------------------------------------------------------------------- parity: params + LLM


PARAM_BODIES = {
    "defaults": split(IRIS_COLS, IRIS_ROWS[:1]),
    "some-given": split(IRIS_COLS, IRIS_ROWS[:1]) | {"params": {"temperature": 0.9, "stop": ["END", "STOP"]}},
    "int-widens-to-double": split(IRIS_COLS, IRIS_ROWS[:1]) | {"params": {"temperature": 1}},
    "unknown-ignored": {
        "inputs": [dict(zip(IRIS_COLS, IRIS_ROWS[0], strict=True))],
        "params": {"top_k": 5, "greedy": True},
    },
    "datetime": split(IRIS_COLS, IRIS_ROWS[:1]) | {"params": {"since": "2025-03-04T05:06:07"}},
    "null-value": split(IRIS_COLS, IRIS_ROWS[:1]) | {"params": {"max_tokens": None}},
    "null-params": split(IRIS_COLS, IRIS_ROWS[:1]) | {"params": None},
}


@pytest.mark.parametrize("body", PARAM_BODIES.values(), ids=PARAM_BODIES.keys())
def test_params_match_mlflow(body: dict[str, Any]) -> None:
    assert_same(PARAMS, body)


def test_params_defaults_are_converted() -> None:
    _, params = run_ours(PARAMS, json.dumps(PARAM_BODIES["defaults"]), JSON)
    assert params == {
        "temperature": 0.5,
        "max_tokens": 16,
        "stop": ["\n"],
        "greedy": False,
        "since": dt.date(2024, 1, 1),
    }


def test_params_without_param_schema_are_ignored_like_mlflow() -> None:
    assert_same(IRIS, split(IRIS_COLS, IRIS_ROWS[:1]) | {"params": {"temperature": 3}})


def test_csv_never_carries_params() -> None:
    assert_same(PARAMS, to_csv(IRIS_COLS, IRIS_ROWS), CSV)


COMPLETION = ModelSignature(
    inputs=Schema([ColSpec("string", "prompt")]), params=ParamSchema([ParamSpec("max_tokens", "long", 8)])
)
EMBEDDING = ModelSignature(inputs=Schema([ColSpec(Array("string"), "input")]))
LLM_CASES = {
    "chat": (CHAT, {"messages": [{"role": "user", "content": "Hi"}], "temperature": 0.7}),
    "chat-defaults": (
        CHAT,
        {"messages": [{"role": "system", "content": "Be brief"}, {"role": "user", "content": "Hi"}]},
    ),
    "completion": (COMPLETION, {"prompt": "Once upon", "max_tokens": 5}),
    "completion-list-is-one-cell": (COMPLETION, {"prompt": ["a", "b"]}),
    "completion-params-key-is-data": (COMPLETION, {"prompt": "x", "params": {"max_tokens": 3}}),
    "embedding": (EMBEDDING, {"input": ["a", "b"]}),
}


@pytest.mark.parametrize("case", LLM_CASES.values(), ids=LLM_CASES.keys())
def test_unified_llm_bodies_match_mlflow(case: tuple[ModelSignature, dict[str, Any]]) -> None:
    sig, body = case
    assert_same(sig, body)
    parsed = parse_request(json.dumps(body).encode(), JSON, parse_signature(sig.to_dict()))
    assert parsed.unwrapped
    assert not set(parsed.data) & {p.name for p in sig.params or []}


def test_unified_llm_without_signature_passes_the_dict() -> None:
    body = {"prompt": "Once upon", "max_tokens": 5}
    assert_same(None, body)
    parsed = parse_request(json.dumps(body).encode(), JSON, None)
    assert parsed.data == body and parsed.params == {} and parsed.unwrapped


# --------------------------------------------------------------------------- parity: CSV

CSV_CASES = {
    "iris": (IRIS, to_csv(IRIS_COLS, IRIS_ROWS)),
    "iris-with-index-column": (IRIS, pd.DataFrame(IRIS_ROWS, columns=IRIS_COLS).to_csv()),
    "iris-ints": (IRIS, to_csv(IRIS_COLS, [[5, 3, 1, 0]])),
    "iris-missing-value": (IRIS, ",".join(IRIS_COLS) + "\n5.1,,1.4,0.2\n"),
    "mixed": (MIXED, to_csv(MIXED_COLS, MIXED_ROWS)),
    "mixed-quoted-and-na": (MIXED, 'id,name,vip,ratio\n1,"Smith, J",TRUE,0.5\n2,NA,false,1\n'),
    "mixed-whole-float-long": (MIXED, "id,name,vip,ratio\n3.0,x,True,1\n"),
    "mixed-header-only": (MIXED, "id,name,vip,ratio\n"),
    "unnamed": (UNNAMED, "p,q\n1.5,2\n3,4.5\n"),
    "untyped": (None, 'i,f,s,b,none,ni\n1,1.5,x,True,,1\n2,2,"y, z",false,,\n'),
    "untyped-duplicate-and-blank-names": (None, "a,a,\n1,2,3\n"),
    "untyped-blank-lines-and-crlf": (None, "a,b\r\n1,x\r\n\r\n2,y\r\n"),
}


@pytest.mark.parametrize("case", CSV_CASES.values(), ids=CSV_CASES.keys())
def test_csv_matches_mlflow(case: tuple[ModelSignature | None, str]) -> None:
    sig, text = case
    assert_same(sig, text, CSV)


def test_csv_content_type_with_charset() -> None:
    assert_same(IRIS, to_csv(IRIS_COLS, IRIS_ROWS), "text/csv; charset=UTF-8")


# --------------------------------------------------------------------------- errors, both sides

# (signature, body, content type, our exception type, error code, words in our message,
#  MLflow's message must contain the same leading words)
ERROR_CASES: dict[str, tuple[Any, ...]] = {
    "malformed-json": (
        IRIS,
        '{"inputs": [1,',
        JSON,
        BadRequest,
        "BAD_REQUEST",
        "Invalid input. Ensure that input is a valid JSON formatted string.",
    ),
    "top-level-list": (
        IRIS,
        "[[1, 2]]",
        JSON,
        BadRequest,
        "BAD_REQUEST",
        "Invalid input. The input must be a JSON dictionary with exactly one of the input fields",
    ),
    "no-format-key": (
        IRIS,
        {"columns": ["a"], "data": [[1]]},
        JSON,
        BadRequest,
        "BAD_REQUEST",
        "Received dictionary with input fields: []",
    ),
    "two-format-keys": (
        IRIS,
        {"inputs": [1], "instances": [1]},
        JSON,
        BadRequest,
        "BAD_REQUEST",
        "The input must be a JSON dictionary with exactly one of the input fields",
    ),
    "split-not-object": (
        IRIS,
        {"dataframe_split": [[1]]},
        JSON,
        BadRequest,
        "BAD_REQUEST",
        "Invalid input. Dataframe split format must be a dictionary. Got list.",
    ),
    "split-unknown-key": (
        IRIS,
        {"dataframe_split": {"data": [], "rows": 1}},
        JSON,
        BadRequest,
        "BAD_REQUEST",
        "Invalid input. Dataframe split format must have 'data' field",
    ),
    "records-object": (
        IRIS,
        {"dataframe_records": {"a": 1}},
        JSON,
        BadRequest,
        "BAD_REQUEST",
        "Invalid input. Dataframe records format must be a list of records. Got dictionary.",
    ),
    "string-into-double": (
        IRIS,
        split(IRIS_COLS, [["wide", 1, 1, 1]]),
        JSON,
        BadRequest,
        "BAD_REQUEST",
        "Invalid input. Data is not compatible with model signature. Failed to convert column",
    ),
    "null-into-long": (
        MIXED,
        split(["id", "name", "vip", "ratio"], [[None, "x", True, 1]]),
        JSON,
        BadRequest,
        "BAD_REQUEST",
        "Invalid input. Data is not compatible with model signature. Failed to convert column",
    ),
    "missing-column": (
        IRIS,
        split(IRIS_COLS[:3] + ["petal"], [[1, 2, 3, 4]]),
        JSON,
        InvalidParameter,
        "INVALID_PARAMETER_VALUE",
        f"Model is missing inputs ['{IRIS_COLS[3]}']. Note that there were extra inputs: ['petal'].",
    ),
    "unnamed-too-few": (
        UNNAMED,
        {"inputs": [1.5]},
        JSON,
        InvalidParameter,
        "INVALID_PARAMETER_VALUE",
        "Model inference is missing inputs.",
    ),
    "tensor-shape": (
        TENSOR,
        {"inputs": [[1, 2, 3]]},
        JSON,
        InvalidParameter,
        "INVALID_PARAMETER_VALUE",
        "Shape of input (1, 3) does not match expected shape (-1, 4).",
    ),
    "tensor-string": (
        TENSOR,
        {"inputs": [["a", 1, 2, 3]]},
        JSON,
        BadRequest,
        "BAD_REQUEST",
        "could not convert string to float: 'a'",
    ),
    "tensor-missing-name": (
        TENSORS,
        {"inputs": {"x": [[1, 2]]}},
        JSON,
        InvalidParameter,
        "INVALID_PARAMETER_VALUE",
        "Model is missing inputs ['y'].",
    ),
    "tensor-dict-unnamed": (
        TENSOR,
        {"inputs": {"a": [1]}},
        JSON,
        BadRequest,
        "BAD_REQUEST",
        "Invalid input. Failed to parse input data. This model contains an un-named model signature",
    ),
    "instances-lengths": (
        IRIS,
        {"instances": [dict(zip(IRIS_COLS, IRIS_ROWS[0], strict=True)), {IRIS_COLS[0]: 1.0}]},
        JSON,
        BadRequest,
        "BAD_REQUEST",
        "Invalid input. The length of values for each input/column name are not the same",
    ),
    "object-missing-property": (
        COMPLEX,
        {"dataframe_records": [{"v": [1.5], "o": {"q": 1}}]},
        JSON,
        BadRequest,
        "BAD_REQUEST",
        "Missing required properties: ['p']",
    ),
    "bad-param": (
        PARAMS,
        split(IRIS_COLS, IRIS_ROWS[:1]) | {"params": {"max_tokens": "many", "stop": "x"}},
        JSON,
        InvalidParameter,
        "INVALID_PARAMETER_VALUE",
        "Invalid parameters found:",
    ),
    "csv-empty": (
        IRIS,
        "",
        CSV,
        BadRequest,
        "BAD_REQUEST",
        "Failed to parse input as a Pandas DataFrame. Ensure that the input is a valid CSV-formatted",
    ),
    "csv-string-into-double": (
        IRIS,
        ",".join(IRIS_COLS) + "\nwide,1,1,1\n",
        CSV,
        BadRequest,
        "BAD_REQUEST",
        "Failed to parse input as a Pandas DataFrame.",
    ),
    "csv-missing-int": (
        MIXED,
        "id,name,vip,ratio\n,x,True,1\n",
        CSV,
        BadRequest,
        "BAD_REQUEST",
        "Failed to parse input as a Pandas DataFrame.",
    ),
    "csv-too-many-fields": (
        None,
        "a,b\n1,2\n1,2,3\n",
        CSV,
        BadRequest,
        "BAD_REQUEST",
        "Failed to parse input as a Pandas DataFrame.",
    ),
}


@pytest.mark.parametrize("case", ERROR_CASES.values(), ids=ERROR_CASES.keys())
def test_errors_match_mlflow(case: tuple[Any, ...]) -> None:
    sig, body, content_type, exc_type, code, words = case
    ours = our_error(sig, body, content_type)
    assert type(ours) is exc_type
    assert ours.status == 400 and ours.error_code == code
    assert words in ours.message
    theirs = mlflow_error(sig, body, content_type)
    assert theirs.get_http_status_code() == 400
    assert theirs.error_code == code
    # MLflow words some details differently (sets vs lists, its data/schema repr prefix), so
    # compare up to the first detail our message adds.
    assert _leading(words) in theirs.message


def _leading(words: str) -> str:
    for cut in (" Note", "['", "(", " model signature"):
        words = words.split(cut)[0]
    return words.rstrip(" .")


def test_error_messages_name_the_column_and_type() -> None:
    err = our_error(IRIS, split(IRIS_COLS, [["wide", 1, 1, 1]]))
    assert f"column '{IRIS_COLS[0]}'" in err.message and "double" in err.message
    err = our_error(MIXED, split(["id", "name", "vip", "ratio"], [[None, "x", True, 1]]))
    assert "column 'id'" in err.message and "long" in err.message
    err = our_error(TENSORS, {"inputs": {"x": [[1, 2, 3]], "y": [1]}})
    assert "input 'x'" in err.message and "(-1, 2)" in err.message
    err = our_error(PARAMS, split(IRIS_COLS, IRIS_ROWS[:1]) | {"params": {"max_tokens": "many", "stop": "x"}})
    assert "'max_tokens'" in err.message and "long" in err.message
    assert "'stop'" in err.message and "string" in err.message


def test_errors_never_echo_the_body() -> None:
    secret = "s3cr3t-" + "x" * 500
    for body in (
        '{"inputs": ["' + secret + '"',
        json.dumps(split(IRIS_COLS, [[secret, 1, 1, 1]])),
        json.dumps({"dataframe_split": {"data": [[secret]], "rows": 1}}),
    ):
        err = our_error(IRIS, body)
        assert secret not in err.message
        assert len(err.message) < 400


@pytest.mark.parametrize(
    ("content_type", "words"),
    [
        ("application/json; charset=latin-1", "The scoring server only supports UTF-8"),
        ("application/json; format=pandas-split", "Unrecognized content type parameters: format."),
        ("text/plain", "This predictor only supports the following content types"),
    ],
)
def test_content_type_errors_match_mlflow(content_type: str, words: str) -> None:
    status, code, text = run_mlflow(IRIS, json.dumps(IRIS_BODIES["split"]), content_type)
    assert (status, code) == ("status", 415) and text.startswith(words)
    err = our_error(IRIS, IRIS_BODIES["split"], content_type)
    assert isinstance(err, UnsupportedMediaType) and err.status == 415
    assert err.error_code == "UNSUPPORTED_MEDIA_TYPE" and err.message.startswith(words)


def test_parquet_is_refused_with_the_accepted_types() -> None:
    err = our_error(IRIS, b"PAR1", "application/vnd.apache.parquet")
    assert isinstance(err, UnsupportedMediaType)
    assert "Parquet" in err.message and "['text/csv', 'application/json']" in err.message


def test_content_type_parameters_are_case_insensitive() -> None:
    assert_same(IRIS, IRIS_BODIES["split"], "application/json; charset=utf-8")
    data, _ = run_ours(IRIS, json.dumps(IRIS_BODIES["split"]), 'Application/JSON; Charset="UTF-8";')
    assert list(data.columns) == IRIS_COLS


def test_non_utf8_bodies() -> None:
    err = our_error(IRIS, b'{"inputs": "\xff"}', JSON)
    assert isinstance(err, BadRequest) and "valid JSON formatted string" in err.message
    err = our_error(IRIS, b"a\n\xff\n", CSV)
    assert isinstance(err, BadRequest) and "valid UTF-8 encoded string" in err.message
    assert mlflow_error(IRIS, b"a\n\xff\n", CSV).error_code == "BAD_REQUEST"


def test_params_must_be_an_object() -> None:
    err = our_error(PARAMS, split(IRIS_COLS, IRIS_ROWS[:1]) | {"params": [1, 2]})
    assert isinstance(err, BadRequest) and "'params' must be a JSON object" in err.message


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (split(["a", "b"], [[1, 2], [3]]), "row 1 has 1 values but 'columns' names 2"),
        (split(None, [[1, 2], [3]]), "row 1 has 1 values but row 0 has 2"),
        (split(["a", "a"], [[1, 2]]), "duplicated names: ['a']"),
        (split(["a"], [[1]], index=[1, 2]), "'index' has 2 entries but 'data' has 1 rows"),
        ({"dataframe_split": {"data": {"a": [1]}}}, "'data' must be a list of rows"),
        ({"dataframe_records": [{"a": 1}, [2]]}, "record 1 is a list"),
    ],
)
def test_malformed_dataframes_are_bad_requests(body: dict[str, Any], words: str) -> None:
    err = our_error(None, body)
    assert isinstance(err, BadRequest) and err.error_code == "BAD_REQUEST" and words in err.message


# --------------------------------------------------------------------------- deliberate differences


def test_difference_non_whole_float_into_long_is_rejected() -> None:
    body = split(["id", "name", "vip", "ratio"], [[2.7, "x", True, 1.0]])
    theirs, _ = run_mlflow(MIXED, json.dumps(body), JSON)
    assert theirs["id"].tolist() == [2]  # MLflow's pre-cast truncates
    err = our_error(MIXED, body)
    assert isinstance(err, InvalidParameter)
    assert err.message == "Incompatible input types for column 'id': 2.7 is not a whole number; expected long."
    err = our_error(MIXED, {"inputs": {"id": [2.5], "name": ["x"], "vip": [True], "ratio": [1.0]}})
    assert "'id'" in err.message and "2.5 is not a whole number" in err.message


def test_difference_integer_overflow_is_rejected() -> None:
    body = split(["id", "name", "vip", "ratio", "visits"], [[1, "x", True, 1.0, 3_000_000_000]])
    theirs, _ = run_mlflow(MIXED, json.dumps(body), JSON)
    assert theirs["visits"].tolist() == [-1294967296]  # wrapped around
    err = our_error(MIXED, body)
    assert isinstance(err, InvalidParameter) and "column 'visits'" in err.message and "integer" in err.message


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")  # MLflow's side
def test_difference_float32_overflow_is_rejected() -> None:
    body = split(["id", "name", "vip", "ratio"], [[1, "x", True, 1e39]])
    theirs, _ = run_mlflow(MIXED, json.dumps(body), JSON)
    assert np.isinf(theirs["ratio"][0])
    err = our_error(MIXED, body)
    assert isinstance(err, InvalidParameter) and "column 'ratio'" in err.message


# MLflow's answers that changed between versions, recorded per version (what *we* answer never depends on it).
MLFLOW_3_18 = Version(mlflow.__version__) >= Version("3.18")


@pytest.mark.parametrize("value", [None, "false", 0])
def test_difference_non_booleans_into_boolean_are_rejected(value: Any) -> None:
    body = split(["id", "name", "vip", "ratio"], [[1, "x", True, 1.0], [2, "y", value, 1.0]])
    theirs, _ = run_mlflow(MIXED, json.dumps(body), JSON)
    # "false" -> True, 0 -> False; null -> False before MLflow 3.18, kept as null from 3.18
    mlflow_answer = None if value is None and MLFLOW_3_18 else bool(value)
    assert theirs["vip"].tolist()[1] == mlflow_answer
    err = our_error(MIXED, body)
    assert isinstance(err, InvalidParameter) and "column 'vip'" in err.message and "boolean" in err.message


def test_difference_ints_in_array_of_double_are_accepted() -> None:
    body = {"dataframe_records": [{"v": [1, 2], "o": {"p": "x"}}]}
    assert mlflow_error(COMPLEX, body).error_code == "BAD_REQUEST"
    data, _ = run_ours(COMPLEX, json.dumps(body), JSON)
    assert data.columns["v"][0] == [1.0, 2.0]


def test_difference_missing_content_type_is_json() -> None:
    with pytest.raises(AttributeError):  # MLflow: None.split -> 500
        run_mlflow(IRIS, json.dumps(IRIS_BODIES["split"]), None)  # type: ignore[arg-type]
    data, _ = run_ours(IRIS, json.dumps(IRIS_BODIES["split"]), None)
    assert list(data.columns) == IRIS_COLS


def test_difference_format_key_wins_over_llm_keys() -> None:
    body = {"inputs": [dict(zip(IRIS_COLS, IRIS_ROWS[0], strict=True))], "input": "ignored"}
    parsed = parse_request(json.dumps(body).encode(), JSON, parse_signature(IRIS.to_dict()))
    assert not parsed.unwrapped and isinstance(parsed.data, Frame)


def test_difference_instances_with_array_columns_are_rows() -> None:
    body = {"instances": COMPLEX_ROWS}
    mlflow_error(COMPLEX, body)  # MLflow transposes to one row holding whole columns, then fails
    data, _ = run_ours(COMPLEX, json.dumps(body), JSON)
    assert data.nrows == 2 and data.columns["v"].tolist() == [[1.5, 2.0], []]


def test_null_in_inputs_string_column_stays_null() -> None:
    """A difference until MLflow 3.18 (numpy wrote the string 'None'); 3.18 keeps the null too (None, or
    NaN under pandas 3's string dtype)."""
    body = {"inputs": {"id": [1, 2], "name": ["x", None], "vip": [True, False], "ratio": [1.0, 2.0]}}
    theirs, _ = run_mlflow(MIXED, json.dumps(body), JSON)
    if MLFLOW_3_18:
        assert theirs["name"].tolist()[0] == "x" and pd.isna(theirs["name"].tolist()[1])
    else:
        assert theirs["name"].tolist() == ["x", "None"]
    data, _ = run_ours(MIXED, json.dumps(body), JSON)
    assert data.columns["name"].tolist() == ["x", None]


def test_difference_binary_is_base64_decoded_in_every_json_format() -> None:
    sig = ModelSignature(inputs=Schema([ColSpec("binary", "blob")]))
    encoded = "aGVsbG8="  # b"hello"
    theirs_split, _ = run_mlflow(sig, json.dumps(split(["blob"], [[encoded]])), JSON)
    theirs_inputs, _ = run_mlflow(sig, json.dumps({"inputs": {"blob": [encoded]}}), JSON)
    assert theirs_split["blob"].tolist() == [b"hello"] and theirs_inputs["blob"].tolist() == [encoded.encode()]
    for body in (split(["blob"], [[encoded]]), {"inputs": {"blob": [encoded]}}, {"inputs": [encoded]}):
        data, _ = run_ours(sig, json.dumps(body), JSON)
        assert data.columns["blob"].tolist() == [b"hello"]


def test_difference_csv_datetime_and_tensor_columns_are_parsed() -> None:
    sig = ModelSignature(inputs=Schema([ColSpec("datetime", "at"), ColSpec("double", "x")]))
    text = "at,x\n2024-05-06T07:08:09,1.5\n"
    assert mlflow_error(sig, text, CSV).error_code == "BAD_REQUEST"
    data, _ = run_ours(sig, text, CSV)
    assert data.columns["at"].tolist() == [np.datetime64("2024-05-06T07:08:09", "ns").astype(int)]
    assert mlflow_error(TENSOR, to_csv(IRIS_COLS, IRIS_ROWS), CSV).error_code == "BAD_REQUEST"
    data, _ = run_ours(TENSOR, to_csv(IRIS_COLS, IRIS_ROWS), CSV)
    assert data.dtype == np.float32 and data.shape == (3, 4)


def test_difference_missing_optional_key_in_instances_is_null() -> None:
    body = {
        "instances": [
            {"id": 1, "name": "x", "vip": True, "ratio": 1.0, "score": 2.0},
            {"id": 2, "name": "y", "vip": False, "ratio": 1.0},
        ]
    }
    assert mlflow_error(MIXED, body).error_code == "INVALID_PARAMETER_VALUE"
    data, _ = run_ours(MIXED, json.dumps(body), JSON)
    assert data.columns["score"].tolist()[0] == 2.0 and math.isnan(data.columns["score"][1])


def test_difference_timezone_aware_datetimes_are_rejected_with_the_column_named() -> None:
    sig = ModelSignature(inputs=Schema([ColSpec("datetime", "at")]))
    body = split(["at"], [["2024-05-06T07:08:09Z"]])
    assert mlflow_error(sig, body).error_code == "INVALID_PARAMETER_VALUE"
    err = our_error(sig, body)
    assert isinstance(err, InvalidParameter) and "column 'at'" in err.message and "timezone" in err.message


def test_datetime_columns_match_mlflow() -> None:
    sig = ModelSignature(inputs=Schema([ColSpec("datetime", "at"), ColSpec("double", "x")]))
    assert_same(sig, split(["at", "x"], [["2024-05-06T07:08:09", 1.5], ["2024-05-07T00:00:00", None]]))


def test_orjson_refusals_fall_back_to_python_json() -> None:
    body = '{"inputs": {"n": [' + str(2**70) + "]}}"
    parsed = parse_request(body.encode(), JSON, None)
    assert parsed.data["n"].tolist() == [2**70]


def test_one_row_iris_body_is_fast() -> None:
    import timeit

    sig = parse_signature(IRIS.to_dict())
    assert sig is not None
    body = orjson.dumps(split(IRIS_COLS, IRIS_ROWS[:1]))

    def once() -> None:
        parsed = parse_request(body, JSON, sig)
        enforce_input(parsed.data, sig.inputs)
        enforce_params(parsed.params, sig.params)

    best = min(timeit.repeat(once, number=200, repeat=5)) / 200
    assert best < 200e-6, f"{best * 1e6:.1f} us per request"


def test_difference_format_key_wins_mlflow_takes_the_llm_path() -> None:
    body = {"inputs": [dict(zip(IRIS_COLS, IRIS_ROWS[0], strict=True))], "input": "ignored"}
    err = mlflow_error(IRIS, body)  # the whole object went to enforcement as LLM data
    assert "Failed to enforce schema" in err.message


def test_difference_ragged_split_rows() -> None:
    body = split(IRIS_COLS, [[1.0, 2.0, 3.0, 4.0], [1.0, 2.0]])
    theirs, _ = run_mlflow(IRIS, json.dumps(body), JSON)
    assert theirs[IRIS_COLS[3]].isna().tolist() == [False, True]  # padded with NaN
    err = our_error(IRIS, body)
    assert isinstance(err, BadRequest) and "row 1 has 2 values" in err.message


@pytest.mark.parametrize("content_type", ["Application/JSON", 'application/json; charset="utf-8"'])
def test_difference_content_type_case_and_quotes(content_type: str) -> None:
    assert run_mlflow(IRIS, json.dumps(IRIS_BODIES["split"]), content_type)[:2] == ("status", 415)
    data, _ = run_ours(IRIS, json.dumps(IRIS_BODIES["split"]), content_type)
    assert list(data.columns) == IRIS_COLS


def test_difference_inputs_string_column_values_are_not_stringified() -> None:
    sig = ModelSignature(inputs=Schema([ColSpec("string", "s")]))
    body = {"inputs": {"s": [1, 2.5, True]}}
    theirs, _ = run_mlflow(sig, json.dumps(body), JSON)
    assert theirs["s"].tolist() == ["1", "2.5", "True"]
    data, _ = run_ours(sig, json.dumps(body), JSON)
    assert data.columns["s"].tolist() == [1, 2.5, True]
    assert_same(sig, split(["s"], [[1], [2.5], [True]]))  # as MLflow does for dataframe bodies


def test_difference_numbers_in_object_properties_are_accepted() -> None:
    sig = ModelSignature(inputs=Schema([ColSpec(Object([Property("f", "float"), Property("i", "integer")]), "o")]))
    body = {"dataframe_records": [{"o": {"f": 1.5, "i": 3}}]}
    assert mlflow_error(sig, body).error_code == "BAD_REQUEST"
    data, _ = run_ours(sig, json.dumps(body), JSON)
    assert data.columns["o"].tolist() == [{"f": 1.5, "i": 3}]
    err = our_error(sig, {"dataframe_records": [{"o": {"f": 1.5, "i": 2.5}}]})
    assert isinstance(err, BadRequest) and "property 'i'" in err.message and "column 'o'" in err.message


def test_difference_null_in_string_tensor_is_rejected() -> None:
    sig = ModelSignature(inputs=Schema([TensorSpec(np.dtype("str"), (-1,))]))
    theirs, _ = run_mlflow(sig, json.dumps({"inputs": ["a", None]}), JSON)
    assert theirs.tolist() == ["a", "None"]
    err = our_error(sig, {"inputs": ["a", None]})
    assert isinstance(err, InvalidParameter) and "null is not a string" in err.message
    assert_same(sig, {"inputs": ["a", "b"]})
