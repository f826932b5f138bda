"""Signatures: parsing MLmodel's ``signature`` and enforcing it, against MLflow's own code.

Signatures are built with ``mlflow.types.schema`` and serialised with ``ModelSignature.to_dict``
exactly as MLflow writes them into MLmodel. Enforcement is compared with
``mlflow.models.utils._enforce_schema`` / ``_enforce_params_schema`` on the same data (a pandas
DataFrame on MLflow's side, the equivalent ``Frame`` on ours).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.models.utils import _enforce_params_schema, _enforce_schema
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

from gateway.errors import BadRequest, InvalidPackage, InvalidParameter
from gateway.serving.enforcement import enforce_input, enforce_params
from gateway.serving.signature import (
    ColSpec as OurColSpec,
)
from gateway.serving.signature import (
    Signature,
    parse_signature,
    signature_to_dict,
)
from gateway.serving.types import Frame

# --------------------------------------------------------------------------- parsing

SIGNATURES = {
    "iris": ModelSignature(
        inputs=Schema([ColSpec("double", n) for n in ("sepal_length", "sepal_width", "petal_length", "petal_width")]),
        outputs=Schema([ColSpec("long")]),
    ),
    "mixed-optional": ModelSignature(
        inputs=Schema(
            [
                ColSpec("long", "id"),
                ColSpec("string", "name"),
                ColSpec("boolean", "vip", required=False),
                ColSpec("binary", "blob", required=False),
                ColSpec("datetime", "at"),
                ColSpec("integer", "n"),
                ColSpec("float", "f"),
            ]
        )
    ),
    "complex": ModelSignature(
        inputs=Schema(
            [
                ColSpec(Array("double"), "v"),
                ColSpec(Array(Array("string")), "nested"),
                ColSpec(Object([Property("b", "long", required=False), Property("a", Array("string"))]), "o"),
                ColSpec(Map(Object([Property("x", "double")])), "m", required=False),
                ColSpec(Array(Map("long")), "am"),
            ]
        )
    ),
    "tensor": ModelSignature(
        inputs=Schema([TensorSpec(np.dtype("float32"), (-1, 4))]),
        outputs=Schema([TensorSpec(np.dtype("int64"), (-1,))]),
    ),
    "tensors": ModelSignature(
        inputs=Schema([TensorSpec(np.dtype("uint8"), (-1, 28, 28), "image"), TensorSpec(np.dtype("str"), (-1,), "tag")])
    ),
    "params": ModelSignature(
        inputs=Schema([ColSpec("string", "prompt")]),
        params=ParamSchema(
            [
                ParamSpec("temperature", "double", 0.5),
                ParamSpec("max_tokens", "long", 16),
                ParamSpec("stop", "string", ["\n", "END"], (-1,)),
                ParamSpec("since", "datetime", "2024-01-02T03:04:05"),
                ParamSpec("days", "datetime", ["2024-01-02"], (-1,)),
                ParamSpec(
                    "options",
                    Object([Property("beam", "long"), Property("mode", "string", required=False)]),
                    {"beam": 2},
                ),
                ParamSpec("nothing", "string", None),
            ]
        ),
    ),
}


@pytest.mark.parametrize("sig", SIGNATURES.values(), ids=SIGNATURES.keys())
def test_parse_round_trips_like_mlflow(sig: ModelSignature) -> None:
    raw = sig.to_dict()  # what MLflow writes into MLmodel: JSON strings
    ours = parse_signature(raw)
    assert ours is not None
    expected = {key: json.loads(value) if value else None for key, value in raw.items()}
    assert orjson.loads(orjson.dumps(signature_to_dict(ours))) == expected


def test_parse_reads_types_shapes_and_defaults() -> None:
    ours = parse_signature(SIGNATURES["mixed-optional"].to_dict())
    assert ours is not None and ours.inputs is not None
    assert not ours.inputs.is_tensor and ours.inputs.has_names
    assert ours.inputs.input_names() == ["id", "name", "vip", "blob", "at", "n", "f"]
    assert ours.inputs.required_names() == ["id", "name", "at", "n", "f"]
    assert ours.inputs.optional_names() == ["vip", "blob"]
    assert ours.inputs.plan is ours.inputs.plan  # compiled once, cached on the schema

    tensors = parse_signature(SIGNATURES["tensors"].to_dict())
    assert tensors is not None and tensors.inputs is not None and tensors.inputs.is_tensor
    image = tensors.inputs.inputs[0]
    assert (image.name, image.dtype, image.shape) == ("image", np.dtype("uint8"), (-1, 28, 28))

    params = parse_signature(SIGNATURES["params"].to_dict())
    assert params is not None and params.params is not None
    defaults = {p.name: p.default for p in params.params}
    assert defaults["since"] == dt.datetime(2024, 1, 2, 3, 4, 5)
    assert defaults["days"] == [dt.date(2024, 1, 2)]
    assert defaults["stop"] == ["\n", "END"] and defaults["nothing"] is None
    assert [p.shape for p in params.params][:3] == [None, None, (-1,)]

    complex_sig = parse_signature(SIGNATURES["complex"].to_dict())
    assert complex_sig is not None and complex_sig.inputs is not None
    obj = complex_sig.inputs.inputs[2]
    assert isinstance(obj, OurColSpec) and obj.properties is not None
    assert [(p.name, p.type, p.required) for p in obj.properties] == [
        ("a", "array", True),
        ("b", "long", False),
    ]


def test_missing_signature_parts() -> None:
    assert parse_signature(None) is None
    sig = parse_signature({"inputs": None, "outputs": None, "params": None})
    assert sig == Signature(None, None, None)
    assert signature_to_dict(sig) == {"inputs": None, "outputs": None, "params": None}


def test_unknown_keys_are_tolerated() -> None:
    raw = {
        "inputs": json.dumps([{"type": "double", "name": "a", "required": True, "description": "x"}]),
        "outputs": None,
        "params": json.dumps([{"name": "k", "type": "long", "default": 1, "shape": None, "doc": "?"}]),
        "future_key": "whatever",
    }
    sig = parse_signature(raw)
    assert sig is not None and sig.inputs is not None and sig.inputs.input_names() == ["a"]
    with pytest.raises(TypeError):  # MLflow itself refuses the extra ColSpec key
        ModelSignature.from_dict(raw)


def test_complex_column_without_required_is_optional_like_mlflow() -> None:
    raw = {"inputs": json.dumps([{"type": "array", "items": {"type": "double"}, "name": "v"}])}
    theirs = ModelSignature.from_dict(raw)
    assert theirs.inputs is not None and not theirs.inputs.inputs[0].required
    ours = parse_signature(raw)
    assert ours is not None and ours.inputs is not None and ours.inputs.optional_names() == ["v"]


def _inputs(*specs: dict[str, Any]) -> dict[str, Any]:
    return {"inputs": json.dumps(list(specs)), "outputs": None, "params": None}


def _params(*specs: dict[str, Any]) -> dict[str, Any]:
    return {"inputs": None, "outputs": None, "params": json.dumps(list(specs))}


TENSOR = {"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 2]}}
BAD_SIGNATURES = {
    "empty": (_inputs(), "signature.inputs: must not be empty"),
    "named-and-unnamed": (
        _inputs({"type": "double", "name": "a"}, {"type": "double"}),
        "mixes named and unnamed",
    ),
    "col-and-tensor": (_inputs({"type": "double"}, TENSOR), "mixes column specs and tensor specs"),
    "unnamed-tensors": (_inputs(TENSOR, TENSOR), "several tensors, which must all be named"),
    "unnamed-optional": (_inputs({"type": "double", "required": False}), "unnamed optional inputs"),
    "unknown-type": (
        _inputs({"type": "int", "name": "age"}),
        "signature.inputs[0] ('age'): unknown type \"int\"",
    ),
    "missing-type": (_inputs({"name": "age"}), "signature.inputs[0] ('age'): missing 'type'"),
    "sized-dtype": (
        _inputs({"type": "tensor", "tensor-spec": {"dtype": "<U10", "shape": [-1]}}),
        "sized dtype",
    ),
    "bad-dtype": (
        _inputs({"type": "tensor", "tensor-spec": {"dtype": "float3", "shape": [-1]}}),
        "unknown tensor dtype",
    ),
    "no-tensor-spec": (_inputs({"type": "tensor"}), "needs 'tensor-spec'"),
    "object-no-properties": (
        _inputs({"type": "object", "name": "o", "properties": {}}),
        "non-empty 'properties'",
    ),
    "array-no-items": (_inputs({"type": "array", "name": "v"}), "signature.inputs[0] ('v') items"),
    "param-binary": (
        _params({"name": "p", "type": "binary", "default": None}),
        "binary params are not supported",
    ),
    "param-bad-default": (_params({"name": "p", "type": "long", "default": 1.5}), "('p'): invalid default"),
    "param-bad-shape": (
        _params({"name": "p", "type": "long", "default": 1, "shape": [2]}),
        "shape must be null",
    ),
    "param-duplicate": (_params(*[{"name": "p", "type": "long", "default": 1}] * 2), "duplicated param name"),
    "param-no-default": (
        _params({"name": "p", "type": "long"}),
        "needs 'name', 'type' (or 'dtype') and 'default'",
    ),
}


@pytest.mark.parametrize("case", BAD_SIGNATURES.values(), ids=BAD_SIGNATURES.keys())
def test_mlflow_rules_raise_invalid_package(case: tuple[dict[str, Any], str]) -> None:
    raw, words = case
    with pytest.raises((MlflowException, TypeError, KeyError)):
        ModelSignature.from_dict(raw)  # MLflow refuses these signatures too
    with pytest.raises(InvalidPackage) as info:
        parse_signature(raw)
    assert info.value.status == 400 and info.value.error_code == "INVALID_PARAMETER_VALUE"
    assert words in info.value.message
    assert info.value.message.startswith("Invalid model signature: signature.")


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ({"inputs": "[{"}, "signature.inputs: not valid JSON"),
        ({"inputs": '{"type": "double"}'}, "signature.inputs: expected a JSON list"),
        ({"outputs": "[1]"}, "signature.outputs[0]: expected an object"),
        ({"inputs": json.dumps([{"type": "double", "name": 3}])}, "'name' must be a string"),
        (
            {"inputs": json.dumps([{"type": "tensor", "tensor-spec": {"dtype": "int8", "shape": None}}])},
            "shape",
        ),
        (["inputs"], "expected a mapping"),
    ],
)
def test_malformed_signatures_name_the_field(raw: Any, words: str) -> None:
    with pytest.raises(InvalidPackage) as info:
        parse_signature(raw)
    assert words in info.value.message


# --------------------------------------------------------------------------- enforcement helpers


def _our(sig: ModelSignature) -> Signature:
    ours = parse_signature(sig.to_dict())
    assert ours is not None
    return ours


def _frame(df: pd.DataFrame) -> Frame:
    return Frame({c: df[c].to_numpy() for c in df.columns}, len(df))


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _dtype(dtype: Any) -> str:
    return "object" if isinstance(dtype, pd.StringDtype) or np.dtype(dtype).kind == "O" else np.dtype(dtype).str


def _same_frame(ours: Any, theirs: pd.DataFrame) -> None:
    assert isinstance(ours, Frame)
    assert list(ours.columns) == list(theirs.columns)
    for name, arr in ours.columns.items():
        assert _dtype(arr.dtype) == _dtype(theirs[name].dtype), name
        if arr.dtype.kind == "M":
            assert arr.astype("int64").tolist() == theirs[name].to_numpy().astype("int64").tolist()
        else:
            assert _plain(arr.tolist()) == _plain(theirs[name].tolist()), name


# --------------------------------------------------------------------------- column enforcement

WIDENING = [
    ("int32", "long"),
    ("float32", "double"),
    ("int8", "double"),
    ("int16", "double"),
    ("int32", "double"),
    ("uint8", "integer"),
    ("uint16", "integer"),
    ("uint8", "long"),
    ("int64", "long"),
    ("float64", "double"),
    ("bool", "boolean"),
]
REFUSED = [
    ("int64", "double"),
    ("uint32", "integer"),
    ("float64", "long"),
    ("float64", "float"),
    ("bool", "long"),
    ("int64", "integer"),
    ("float64", "boolean"),
    ("int64", "string"),
]


@pytest.mark.parametrize(("source", "target"), WIDENING)
def test_safe_widening_matches_mlflow(source: str, target: str) -> None:
    df = pd.DataFrame({"a": np.array([3, 5], dtype=source)})
    sig = ModelSignature(inputs=Schema([ColSpec(target, "a")]))
    theirs = _enforce_schema(df, sig.inputs)
    ours = enforce_input(_frame(df), _our(sig).inputs)
    _same_frame(ours, theirs)


@pytest.mark.parametrize(("source", "target"), REFUSED)
def test_unsafe_conversions_are_refused_like_mlflow(source: str, target: str) -> None:
    df = pd.DataFrame({"a": np.array([3, 5], dtype=source)})
    sig = ModelSignature(inputs=Schema([ColSpec(target, "a")]))
    with pytest.raises(MlflowException, match="Incompatible input types for column a"):
        _enforce_schema(df, sig.inputs)
    with pytest.raises(InvalidParameter) as info:
        enforce_input(_frame(df), _our(sig).inputs)
    assert info.value.message.startswith("Incompatible input types for column 'a'")
    assert f"expected {target}." in info.value.message


def test_int64_zeros_and_ones_widen_to_double_like_mlflow() -> None:
    df = pd.DataFrame({"a": np.array([0, 1, 1], dtype="int64")})
    sig = ModelSignature(inputs=Schema([ColSpec("double", "a")]))
    _same_frame(enforce_input(_frame(df), _our(sig).inputs), _enforce_schema(df, sig.inputs))


def test_object_columns_like_mlflow() -> None:
    df = pd.DataFrame(
        {
            "s": np.array(["x", None], dtype=object),
            "b": np.array([True, None], dtype=object),
            "d": np.array([1.5, 2.5], dtype=object),
            "u": np.array(["2024-01-01T00:00:00", "2024-01-02T00:00:00"], dtype="datetime64[s]"),
        }
    )
    sig = ModelSignature(
        inputs=Schema(
            [
                ColSpec("string", "s"),
                ColSpec("boolean", "b"),
                ColSpec("double", "d"),
                ColSpec("datetime", "u"),
            ]
        )
    )
    _same_frame(enforce_input(_frame(df), _our(sig).inputs), _enforce_schema(df, sig.inputs))


def test_missing_value_hint_for_integer_columns() -> None:
    df = pd.DataFrame({"a": [1.0, np.nan]})
    sig = ModelSignature(inputs=Schema([ColSpec("long", "a")]))
    with pytest.raises(MlflowException, match="missing values"):
        _enforce_schema(df, sig.inputs)
    with pytest.raises(InvalidParameter, match="missing values"):
        enforce_input(_frame(df), _our(sig).inputs)


def test_named_columns_reordered_extras_dropped_optional_absent() -> None:
    sig = ModelSignature(inputs=Schema([ColSpec("long", "a"), ColSpec("string", "b"), ColSpec("double", "c", False)]))
    df = pd.DataFrame({"z": [1.0], "b": ["x"], "a": np.array([2], dtype="int64")})
    ours = enforce_input(_frame(df), _our(sig).inputs)
    _same_frame(ours, _enforce_schema(df, sig.inputs))
    assert list(ours.columns) == ["a", "b"]


def test_missing_inputs_message_like_mlflow() -> None:
    sig = ModelSignature(inputs=Schema([ColSpec("long", "a"), ColSpec("string", "b")]))
    df = pd.DataFrame({"b": ["x"], "extra": [1]})
    with pytest.raises(MlflowException) as theirs:
        _enforce_schema(df, sig.inputs)
    with pytest.raises(InvalidParameter) as ours:
        enforce_input(_frame(df), _our(sig).inputs)
    assert (
        ours.value.message
        == theirs.value.message
        == "Model is missing inputs ['a']. Note that there were extra inputs: ['extra']."
    )


def test_unnamed_columns_positional_like_mlflow() -> None:
    sig = ModelSignature(inputs=Schema([ColSpec("double"), ColSpec("long")]))
    df = pd.DataFrame({"p": [1.5], "q": np.array([2], dtype="int32"), "r": ["dropped"]})
    _same_frame(enforce_input(_frame(df), _our(sig).inputs), _enforce_schema(df, sig.inputs))
    short = pd.DataFrame({"p": [1.5]})
    with pytest.raises(MlflowException, match="Model inference is missing inputs"):
        _enforce_schema(short, sig.inputs)
    with pytest.raises(InvalidParameter, match="declares 2 inputs but the provided value only has 1"):
        enforce_input(_frame(short), _our(sig).inputs)


@pytest.mark.parametrize(
    "data",
    [
        {"a": 1, "b": "x"},  # all scalars: one row
        {"a": [1, 2], "b": ["x", "y"]},  # lists: columns
        {"a": [1, 2], "b": "x"},  # a scalar is broadcast
        {"b": ["x", "y"], "a": 3},  # a list of strings is one cell
    ],
)
def test_dicts_become_frames_like_mlflow(data: dict[str, Any]) -> None:
    sig = ModelSignature(inputs=Schema([ColSpec("long", "a"), ColSpec("string", "b")]))
    theirs = _enforce_schema(dict(data), sig.inputs)
    _same_frame(enforce_input(dict(data), _our(sig).inputs), theirs)


def test_arrays_and_scalars_become_frames_like_mlflow() -> None:
    sig = ModelSignature(inputs=Schema([ColSpec("double"), ColSpec("double")]))
    arr = np.array([[1.5, 2.5], [3.5, 4.5]])
    _same_frame(enforce_input(arr, _our(sig).inputs), _enforce_schema(arr, sig.inputs))
    one = ModelSignature(inputs=Schema([ColSpec("string")]))
    _same_frame(enforce_input("hello", _our(one).inputs), _enforce_schema("hello", one.inputs))


COMPLEX = ModelSignature(
    inputs=Schema(
        [
            ColSpec(Array("string"), "tags"),
            ColSpec(Object([Property("role", "string"), Property("weight", "double", required=False)]), "msg"),
            ColSpec(Map(Array("long")), "m", required=False),
            ColSpec(Array(Array("double")), "grid", required=False),
        ]
    )
)


def test_complex_cells_like_mlflow() -> None:
    df = pd.DataFrame(
        {
            "tags": [["a", "b"], []],
            "msg": [{"role": "user", "weight": 0.5}, {"role": "system"}],
            "m": [{"k": [1, 2]}, None],
            "grid": [[[1.5], [2.5, 3.5]], None],
        }
    )
    _same_frame(enforce_input(_frame(df), _our(COMPLEX).inputs), _enforce_schema(df, COMPLEX.inputs))


@pytest.mark.parametrize(
    ("cell", "words"),
    [
        ({"tags": "a"}, "column 'tags'"),
        ({"msg": {"weight": 1.0}}, "Missing required properties: ['role']"),
        (
            {"msg": {"role": "user", "mood": "ok"}},
            "Invalid properties not defined in the schema found: ['mood']",
        ),
        ({"msg": {"role": 3}}, "property 'role'"),
        ({"m": {"k": "v"}}, "column 'm'"),
        ({"tags": None}, "column 'tags'"),
    ],
)
def test_complex_cell_errors_name_the_column_and_type(cell: dict[str, Any], words: str) -> None:
    row = {"tags": ["a"], "msg": {"role": "user"}} | cell
    df = pd.DataFrame({k: [v] for k, v in row.items()})
    with pytest.raises(MlflowException):
        _enforce_schema(df, COMPLEX.inputs)
    with pytest.raises(BadRequest) as info:
        enforce_input(_frame(df), _our(COMPLEX).inputs)
    assert words in info.value.message
    assert "expected" in info.value.message or "type" in info.value.message


# --------------------------------------------------------------------------- tensors

TENSOR = ModelSignature(inputs=Schema([TensorSpec(np.dtype("float32"), (-1, 2))]))
TENSORS = ModelSignature(
    inputs=Schema([TensorSpec(np.dtype("float64"), (-1, 1), "x"), TensorSpec(np.dtype("int64"), (-1, 3), "y")])
)


def test_tensors_pass_like_mlflow() -> None:
    arr = np.array([[1, 2], [3, 4]], dtype=np.float32)
    assert enforce_input(arr, _our(TENSOR).inputs) is arr
    named = {"y": np.zeros((2, 3), dtype=np.int64), "x": np.ones((2, 1)), "z": np.zeros(1)}
    theirs = _enforce_schema(dict(named), TENSORS.inputs)
    ours = enforce_input(dict(named), _our(TENSORS).inputs)
    assert list(ours) == list(theirs) == ["x", "y"]
    ragged = np.array([[1], [1, 2]], dtype=object)
    obj = ModelSignature(inputs=Schema([TensorSpec(np.dtype("object"), (-1,))]))
    assert enforce_input(ragged, _our(obj).inputs) is ragged


@pytest.mark.parametrize(
    ("arr", "words"),
    [
        (np.zeros((3,), dtype=np.float32), "Shape of input (3,) does not match expected shape (-1, 2)."),
        (np.zeros((1, 3), dtype=np.float32), "Shape of input (1, 3) does not match expected shape (-1, 2)."),
        (np.zeros((1, 2), dtype=np.float64), "dtype of input float64 does not match expected dtype float32"),
    ],
)
def test_tensor_mismatches_like_mlflow(arr: np.ndarray, words: str) -> None:
    with pytest.raises(MlflowException, match=words.replace("(", r"\(").replace(")", r"\)")):
        _enforce_schema(arr, TENSOR.inputs)
    with pytest.raises(InvalidParameter) as info:
        enforce_input(arr, _our(TENSOR).inputs)
    assert info.value.message.startswith(words)


def test_named_tensor_errors_name_the_input() -> None:
    with pytest.raises(InvalidParameter) as info:
        enforce_input({"x": np.ones((2, 2)), "y": np.zeros((2, 3), dtype=np.int64)}, _our(TENSORS).inputs)
    assert "for input 'x'" in info.value.message
    with pytest.raises(InvalidParameter) as info:
        enforce_input({"x": [[1.0]], "y": np.zeros((1, 3), dtype=np.int64)}, _our(TENSORS).inputs)
    assert "input 'x' is a list" in info.value.message


def test_frames_into_tensors_like_mlflow() -> None:
    single = ModelSignature(inputs=Schema([TensorSpec(np.dtype("float32"), (-1, 1))]))
    df = pd.DataFrame({"a": np.array([1.5, 2.5], dtype=np.float32)})
    theirs = _enforce_schema(df, single.inputs)
    ours = enforce_input(_frame(df), _our(single).inputs)
    assert ours.shape == theirs.shape == (2, 1) and ours.dtype == theirs.dtype
    wide = pd.DataFrame({"a": np.array([1.5], dtype=np.float32), "b": np.array([2.5], dtype=np.float32)})
    np.testing.assert_array_equal(
        enforce_input(_frame(wide), _our(TENSOR).inputs), _enforce_schema(wide, TENSOR.inputs)
    )
    cells = pd.DataFrame({"x": [[1.0], [2.0]], "y": [[1, 2, 3], [4, 5, 6]]})
    theirs_d = _enforce_schema(cells, TENSORS.inputs)
    ours_d = enforce_input(_frame(cells), _our(TENSORS).inputs)
    for name in ("x", "y"):
        np.testing.assert_array_equal(ours_d[name], theirs_d[name])
        assert ours_d[name].dtype == theirs_d[name].dtype


@pytest.mark.parametrize(
    ("df", "words"),
    [
        (pd.DataFrame({"a": np.array([1.0], dtype=np.float32)}), "contains scalar values"),
        (pd.DataFrame({"a": [1.0], "b": [2.0], "c": [3.0]}), "(-1, number_of_dataframe_columns)"),
        (pd.DataFrame({"a": []}), "Input DataFrame is empty."),
    ],
)
def test_frame_into_tensor_errors_like_mlflow(df: pd.DataFrame, words: str) -> None:
    with pytest.raises(MlflowException):
        _enforce_schema(df, TENSOR.inputs)
    with pytest.raises(InvalidParameter) as info:
        enforce_input(_frame(df), _our(TENSOR).inputs)
    assert words in info.value.message


def test_no_schema_passes_data_unchanged() -> None:
    data = {"anything": [1, 2]}
    assert enforce_input(data, None) is data


# --------------------------------------------------------------------------- params

PARAMS = ParamSchema(
    [
        ParamSpec("temperature", "double", 0.5),
        ParamSpec("ratio", "float", 1.0),
        ParamSpec("k", "long", 3),
        ParamSpec("n", "integer", 1),
        ParamSpec("greedy", "boolean", False),
        ParamSpec("stop", "string", ["\n"], (-1,)),
        ParamSpec("since", "datetime", "2024-01-01"),
        ParamSpec("opts", Object([Property("beam", "long")]), {"beam": 1}),
    ]
)
_OUR_PARAMS = parse_signature(ModelSignature(params=PARAMS).to_dict())
assert _OUR_PARAMS is not None

ACCEPTED_PARAMS = [
    {},
    {"temperature": 1},
    {"temperature": 0.2, "ratio": 2, "k": 10, "n": 5},
    {"greedy": True, "stop": ["a", "b"]},
    {"since": "2025-06-07T08:09:10"},
    {"since": "2025-06-07"},
    {"opts": {"beam": 4}},
    {"k": None},
    {"k": 2**40, "unknown": "ignored"},
]
REFUSED_PARAMS = [
    {"temperature": "hot"},
    {"k": 2.0},
    {"k": True},
    {"n": "1"},
    {"greedy": 1},
    {"stop": "a"},
    {"stop": [["a"]]},
    {"temperature": [1.0]},
    {"since": "yesterday"},
    {"opts": {"beam": 1, "width": 2}},
]


@pytest.mark.parametrize("params", ACCEPTED_PARAMS)
def test_params_like_mlflow(params: dict[str, Any]) -> None:
    theirs = _enforce_params_schema(dict(params), PARAMS)
    ours = enforce_params(dict(params), _OUR_PARAMS.params)
    assert ours == theirs
    assert {k: type(v) for k, v in (ours or {}).items()} == {k: type(v) for k, v in theirs.items()}


@pytest.mark.parametrize("params", REFUSED_PARAMS)
def test_refused_params_like_mlflow(params: dict[str, Any]) -> None:
    with pytest.raises(MlflowException, match="Invalid parameters found"):
        _enforce_params_schema(dict(params), PARAMS)
    with pytest.raises(InvalidParameter) as info:
        enforce_params(dict(params), _OUR_PARAMS.params)
    assert info.value.message.startswith("Invalid parameters found: ")
    name = next(iter(params))
    assert f"'{name}'" in info.value.message


def test_param_errors_are_aggregated_and_name_the_type() -> None:
    with pytest.raises(InvalidParameter) as info:
        enforce_params({"temperature": "hot", "k": 1.5, "greedy": "yes"}, _OUR_PARAMS.params)
    message = info.value.message
    assert "'temperature': expected double" in message
    assert "'k': expected long" in message
    assert "'greedy': expected boolean" in message


def test_params_without_param_schema_are_ignored_like_mlflow() -> None:
    assert enforce_params(None, None) is _enforce_params_schema(None, None) is None
    assert enforce_params({"a": 1}, None) == _enforce_params_schema({"a": 1}, None) == {}


def test_other_inputs_into_column_schemas() -> None:
    unnamed = _our(ModelSignature(inputs=Schema([ColSpec("double"), ColSpec("double")]))).inputs
    frame = enforce_input([[1.5, 2], [3, 4.5]], unnamed)
    assert isinstance(frame, Frame) and frame.columns[1].tolist() == [2.0, 4.5]
    with pytest.raises(InvalidParameter, match="3-dimensional array cannot be a table"):
        enforce_input(np.zeros((2, 2, 2)), unnamed)
    named = _our(ModelSignature(inputs=Schema([ColSpec("long", "a"), ColSpec("string", "b")]))).inputs
    frame = enforce_input([{"a": 1, "b": "x"}, {"b": "y", "a": 2}], named)
    assert list(frame.columns) == ["a", "b"] and frame.columns["a"].dtype == np.int64
    with pytest.raises(InvalidParameter, match="all columns must have the same length"):
        enforce_input({"a": [1, 2], "b": ["x"], "c": [1, 2, 3]}, named)


def test_frame_into_tensor_needs_a_variable_first_dimension() -> None:
    fixed = ModelSignature(inputs=Schema([TensorSpec(np.dtype("float32"), (2, -1), "x")]))
    df = pd.DataFrame({"x": [[1.0, 2.0], [3.0, 4.0]]})
    with pytest.raises(MlflowException, match="first dimension of shape must be a variable dimension"):
        _enforce_schema(df, fixed.inputs)
    with pytest.raises(InvalidParameter, match="first dimension of shape must be a variable dimension"):
        enforce_input(_frame(df), _our(fixed).inputs)
    with pytest.raises(InvalidParameter, match=r"Model is missing inputs \['y'\]"):
        enforce_input(_frame(pd.DataFrame({"x": [[1.0]]})), _our(TENSORS).inputs)
