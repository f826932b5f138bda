"""``/invocations`` bodies to ``ParsedRequest``: MLflow's scoring protocol, without pandas.

Content types (``Content-Type`` split on ``;``; only a ``charset=utf-8`` parameter is allowed):

* ``application/json`` (also when the header is missing): an object with exactly one of
  ``dataframe_split``, ``dataframe_records``, ``instances``, ``inputs`` plus optional ``params``;
  or MLflow's unified-LLM shortcut (``messages`` / ``prompt`` / ``input`` and no format key),
  passed on whole and answered unwrapped.
* ``text/csv``: a header row and rows, typed by the signature (``pandas.read_csv`` rules; in
  ``gateway.serving.csv_payload``).

Columns are converted once, here, to the signature's types (``gateway.serving.conversion``), so
``enforcement.enforce_input`` finds them ready and only reorders and checks. Errors are
``BadRequest`` / ``UnsupportedMediaType`` with MLflow's leading words; the body is never echoed.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson

from gateway.errors import BadRequest, UnsupportedMediaType
from gateway.json_depth import DEFAULT_MAX_JSON_DEPTH, check_json_depth
from gateway.serving.conversion import (
    COLUMN_DTYPES,
    SCALAR_TYPES,
    array_from_json,
    column_from_json,
    infer_column,
    object_column,
)
from gateway.serving.csv_payload import parse_csv
from gateway.serving.limits import check_rows
from gateway.serving.messages import cannot_convert, column_label, show
from gateway.serving.signature import ColSpec, Schema, Signature, TensorSpec
from gateway.serving.types import Frame, ParsedRequest

CONTENT_TYPE_JSON = "application/json"
CONTENT_TYPE_CSV = "text/csv"
CONTENT_TYPE_PARQUET = "application/vnd.apache.parquet"
ACCEPTED_CONTENT_TYPES = [CONTENT_TYPE_CSV, CONTENT_TYPE_JSON]

FORMAT_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")
LLM_KEYS = ("messages", "prompt", "input")
_FORMAT_SET = frozenset(FORMAT_KEYS)
REQUIRED_INPUT_FORMAT = (
    "The input must be a JSON dictionary with exactly one of the input fields "
    "{'dataframe_split', 'dataframe_records', 'instances', 'inputs'}"
)
SCORING_PROTOCOL_CHANGE_INFO = (
    "IMPORTANT: The MLflow Model scoring protocol has changed in MLflow version 2.0. If you are"
    " seeing this error, you are likely using an outdated scoring request format. To resolve the"
    " error, either update your request format or adjust your MLflow Model's requirements file to"
    " specify an older version of MLflow (for example, change the 'mlflow' requirement specifier"
    " to 'mlflow==1.30.0'). If you are making a request using the MLflow client"
    " (e.g. via `mlflow.pyfunc.spark_udf()`), upgrade your MLflow client to a version >= 2.0 in"
    " order to use the new request format. For more information about the updated MLflow"
    " Model scoring protocol in MLflow 2.0, see"
    " https://mlflow.org/docs/latest/models.html#deploy-mlflow-models."
)


def parse_request(
    body: bytes,
    content_type: str | None,
    signature: Signature | None,
    max_rows: int | None = None,
    max_json_depth: int = DEFAULT_MAX_JSON_DEPTH,
) -> ParsedRequest:
    """Decode one ``/invocations`` body; data is typed by ``signature.inputs`` when there is one.

    Raises ``UnsupportedMediaType`` (415) for the content type, ``BadRequest`` for a body that is
    not a valid request, ``InvalidParameter`` for a value that does not fit its column's type, and
    ``TooManyRows`` (413) for more than ``max_rows`` rows, counted before any value is converted. A JSON body
    nested deeper than ``max_json_depth`` (``http.max_json_depth``) is a ``BadRequest`` before it is parsed.
    """
    schema = signature.inputs if signature is not None else None
    if _media_type(content_type) == CONTENT_TYPE_CSV:
        return ParsedRequest(parse_csv(body, schema, max_rows), None)
    return _parse_json_body(body, signature, schema, max_rows, max_json_depth)


def _media_type(content_type: str | None) -> str:
    # No header: MLflow crashes with a 500 (None.split); JSON is the only sensible reading.
    if content_type is None or content_type == CONTENT_TYPE_JSON or not content_type.strip():
        return CONTENT_TYPE_JSON
    mime, *pairs = (part.strip() for part in content_type.split(";"))
    params = {}
    for pair in pairs:
        if pair:
            key, _, value = pair.partition("=")
            params[key.strip().lower()] = value.strip().strip('"')
    if params.pop("charset", "utf-8").lower() != "utf-8":
        raise UnsupportedMediaType("The scoring server only supports UTF-8")
    if params:
        raise UnsupportedMediaType(
            f"Unrecognized content type parameters: {', '.join(params)}. {SCORING_PROTOCOL_CHANGE_INFO}"
        )
    mime = mime.lower()
    if mime in (CONTENT_TYPE_JSON, CONTENT_TYPE_CSV):
        return mime
    accepted = f"This predictor only supports the following content types: Types: {ACCEPTED_CONTENT_TYPES}."
    if mime == CONTENT_TYPE_PARQUET:
        raise UnsupportedMediaType(f"Parquet input is not supported by this server. {accepted}")
    raise UnsupportedMediaType(f"{accepted} Got {show(content_type, 100)}.")


# --------------------------------------------------------------------------- JSON


def _decode_json(body: bytes, max_depth: int) -> Any:
    check_json_depth(body, max_depth)  # before either parser: json.loads would recurse
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    # orjson refuses NaN/Infinity and integers past 64 bits, which MLflow's json.loads accepts
    # (MLflow's own client writes NaN for missing values). Only failed bodies pay for this.
    try:
        return json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        error = f"UnicodeDecodeError: {exc.reason} at byte {exc.start}"
    except (json.JSONDecodeError, RecursionError) as exc:
        error = repr(exc)
    raise BadRequest(f"Invalid input. Ensure that input is a valid JSON formatted string. Error: '{error}'")


def _parse_json_body(
    body: bytes, signature: Signature | None, schema: Schema | None, max_rows: int | None, max_depth: int
) -> ParsedRequest:
    obj = _decode_json(body, max_depth)
    if max_rows is not None and type(obj) is dict:
        check_rows(_json_rows(obj), max_rows)
    if schema is not None and type(obj) is dict and len(obj) == 1:
        frame = _plain_double_split(obj.get("dataframe_split"), schema)
        if frame is not None:
            return ParsedRequest(frame, None)
    if not isinstance(obj, dict):
        got = "Received a list" if isinstance(obj, list) else f"Received unexpected input type '{_json_type(obj)}'"
        raise BadRequest(f"Invalid input. {REQUIRED_INPUT_FORMAT}. {got}.")
    found = [key for key in obj if key in _FORMAT_SET]
    if not found and any(key in obj for key in LLM_KEYS):
        # Unified LLM shortcut: keys named in the param schema are params, the rest is the data.
        names = {p.name for p in signature.params} if signature is not None and signature.params else set()
        llm_data = {k: v for k, v in obj.items() if k not in names}
        return ParsedRequest(llm_data, {k: v for k, v in obj.items() if k in names}, unwrapped=True)
    if len(found) != 1:
        raise BadRequest(
            f"{REQUIRED_INPUT_FORMAT}. Received dictionary with input fields: {found}. {SCORING_PROTOCOL_CHANGE_INFO}"
        )
    params = obj.get("params")
    if params is not None and not isinstance(params, dict):
        raise BadRequest(
            f"Invalid input. 'params' must be a JSON object mapping param names to values, got {_json_type(params)}."
        )
    key = found[0]
    value = obj[key]
    if key == "dataframe_split":
        data: Any = _frame_from_split(value, schema)
    elif key == "dataframe_records":
        data = _frame_from_records(value, schema)
    elif key == "instances":
        data = _parse_instances(value, schema)
    else:
        data = _parse_inputs(value, schema)
    return ParsedRequest(data, params)


def _json_rows(obj: dict[str, Any]) -> int:
    """The rows a decoded body holds, as the conversions will count them (0 when its shape is wrong:
    those errors are worded where the shape is checked)."""
    value = next((obj[key] for key in FORMAT_KEYS if key in obj), None)
    if isinstance(value, dict):
        if "dataframe_split" in obj:
            data = value.get("data")
            return len(data) if isinstance(data, list) else 0
        # instances/inputs as named columns: the longest column
        return max((len(v) for v in value.values() if isinstance(v, list)), default=1)
    return len(value) if isinstance(value, list) else 0


def _json_type(value: Any) -> str:
    if isinstance(value, dict):
        return "dictionary"
    if isinstance(value, list):
        return "list"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return "string" if isinstance(value, str) else "number"


def _column(values: Any, spec: ColSpec | TensorSpec | None, key: str | int) -> np.ndarray:
    """One incoming column typed like MLflow's pre-cast (``cast_df_types_according_to_schema``)."""
    if spec is None:
        return infer_column(values)
    label = column_label(key)
    if isinstance(spec, ColSpec):
        return column_from_json(values, spec, label)
    if values and isinstance(values[0], list):
        return object_column(values)  # list cells are reshaped into the tensor by enforcement
    arr = array_from_json(values, spec.dtype, label, spec.dtype)
    if arr.ndim != 1:
        raise cannot_convert(label, spec.dtype.name, "cells must be single values or lists")
    return arr


def _frame(names: list[Any], columns: list[Any], nrows: int, schema: Schema | None) -> Frame:
    if schema is None:
        return Frame({k: infer_column(v) for k, v in zip(names, columns, strict=True)}, nrows)
    spec_of = schema.column_spec
    return Frame({k: _column(v, spec_of(k, i), k) for i, (k, v) in enumerate(zip(names, columns, strict=True))}, nrows)


def _frame_from_split(value: Any, schema: Schema | None) -> Frame:
    if not isinstance(value, dict):
        raise BadRequest(f"Invalid input. Dataframe split format must be a dictionary. Got {_json_type(value)}.")
    if "data" not in value or not value.keys() <= {"columns", "data", "index"}:
        raise BadRequest(
            "Invalid input. Dataframe split format must have 'data' field and optionally 'columns' and "
            f"'index' fields. Got {sorted(value)}."
        )
    data, columns, index = value["data"], value.get("columns"), value.get("index")
    if not isinstance(data, list):
        raise BadRequest(f"Invalid input. Dataframe split 'data' must be a list of rows. Got {_json_type(data)}.")
    if columns is not None and (schema is None or columns != schema.plan.unique_name_list):
        _check_column_names(columns)  # (the schema's own names, in order, are known to be valid)
    if data and all(type(row) is list for row in data):
        width = len(columns) if columns is not None else len(data[0])
        for i, row in enumerate(data):
            if len(row) != width:
                other = "'columns' names" if columns is not None else "row 0 has"
                raise BadRequest(f"Invalid input. Dataframe split row {i} has {len(row)} values but {other} {width}.")
        if schema is not None and columns is not None:
            block = _double_block(data, columns, schema)
            if block is not None:
                _check_index(index, data)
                return Frame.of_block(tuple(columns), block)
        cols: list[Any] = list(zip(*data, strict=True))
    elif data and not any(type(row) in (list, dict) for row in data):
        width = 1  # a flat list is one column, as pandas reads it
        if columns is not None and len(columns) != 1:
            raise BadRequest(f"Invalid input. Dataframe split 'data' is one column but 'columns' names {len(columns)}.")
        cols = [data]
    elif data:
        raise BadRequest("Invalid input. Dataframe split 'data' must be a list of rows, each a list of values.")
    else:
        width = len(columns) if columns is not None else 0
        cols = [[] for _ in range(width)]
    _check_index(index, data)
    names = columns if columns is not None else list(range(width))
    return _frame(names, cols, len(data), schema)


def _plain_double_split(value: Any, schema: Schema) -> Frame | None:
    """The most common request in one step: ``{"dataframe_split": {"columns": [...], "data": [[...], ...]}}``
    whose ``columns`` are the schema's names in order, for a model whose columns are all ``double``
    (iris-like). Gives the Frame ``_frame_from_split`` gives for it, without its checks, which such a
    body passes by construction; None for anything else (the general path parses it and words errors)."""
    if type(value) is not dict or len(value) != 2:  # exactly "columns" and "data", no "index"
        return None
    plan = schema.plan
    names = plan.unique_name_list
    data = value.get("data")
    if (
        names is None
        or plan.double_names is None
        or type(data) is not list
        or not data
        or value.get("columns") != names
    ):
        return None
    try:
        block = np.array(data, dtype=np.float64)  # as _double_block converts it
    except (ValueError, TypeError, OverflowError):
        return None
    # Ragged rows fail above; rows of the right width give [rows, columns] (other shapes: general path).
    if block.ndim != 2 or block.shape[1] != len(names):
        return None
    return Frame.of_block(plan.ordered_names, block)


def _check_index(index: Any, data: list[Any]) -> None:
    if index is not None and (not isinstance(index, list) or len(index) != len(data)):
        size = len(index) if isinstance(index, list) else _json_type(index)
        raise BadRequest(f"Invalid input. Dataframe split 'index' has {size} entries but 'data' has {len(data)} rows.")


def _double_block(data: list[Any], names: list[Any], schema: Schema) -> np.ndarray | None:
    """The rows as one float64 matrix when every named column is a ``double`` column.

    The common case (iris-like tables): one numpy call instead of one per column. The cell
    conversion is the one ``column_from_json`` does per column (``np.array(..., float64)``); on
    any failure the caller takes the per-column path, which names the offending column.
    """
    if schema.is_tensor:
        return None
    double_names = schema.plan.double_names
    if double_names is None or not double_names.issuperset(names):
        return None
    try:
        block = np.array(data, dtype=np.float64)
    except (ValueError, TypeError, OverflowError):
        return None
    return block if block.ndim == 2 and block.shape[1] == len(names) else None


def _check_column_names(columns: Any) -> None:
    if not isinstance(columns, list) or not all(isinstance(c, str | int) and not isinstance(c, bool) for c in columns):
        raise BadRequest("Invalid input. Dataframe split 'columns' must be a list of column names.")
    if len(set(columns)) != len(columns):
        dupes = sorted({str(c) for c in columns if columns.count(c) > 1})
        raise BadRequest(f"Invalid input. Dataframe split 'columns' has duplicated names: {dupes}.")


def _frame_from_records(value: Any, schema: Schema | None) -> Frame:
    if not isinstance(value, list):
        got = "dictionary" if isinstance(value, dict) else f"type {_json_type(value)}"
        raise BadRequest(f"Invalid input. Dataframe records format must be a list of records. Got {got}.")
    names, cols = _transpose_records(value, "Dataframe records format must be a list of records")
    return _frame(names, cols, len(value), schema)


def _transpose_records(rows: list[Any], what: str) -> tuple[list[str], list[list[Any]]]:
    """Column names in order of first appearance (as pandas does) and one list per column; a key
    missing from a row is null there."""
    if not rows:
        return [], []
    first = rows[0]
    keys: dict[str, None] = {}
    for i, row in enumerate(rows):
        if type(row) is not dict:
            raise BadRequest(f"Invalid input. {what} (JSON objects); record {i} is a {_json_type(row)}.")
        if row.keys() != first.keys() or i == 0:
            keys.update(dict.fromkeys(row))
    names = list(keys)
    return names, [[row.get(k) for row in rows] for k in names]


def _parse_instances(value: Any, schema: Schema | None) -> Any:
    """TF-serving row format: a list of objects is transposed to columns, else like ``inputs``."""
    if not (isinstance(value, list) and value and isinstance(value[0], dict)):
        data = _parse_inputs(value, schema)
        if isinstance(data, dict):
            lengths = {
                len(v) for k, v in data.items() if isinstance(v, list | np.ndarray) and _length_checked(k, schema)
            }
            if len(lengths) > 1:
                raise BadRequest("Invalid input. The length of values for each input/column name are not the same")
        return data
    names, cols = _transpose_records(value, "instances must be a list of objects")
    for name, col in zip(names, cols, strict=True):
        if any(v is None for v in col) and _length_checked(name, schema) and any(name not in r for r in value):
            raise BadRequest(
                "Invalid input. The length of values for each input/column name are not the same "
                f"('{name}' is missing from some instances)"
            )
    if schema is None:
        return {k: _untyped_array(col) for k, col in zip(names, cols, strict=True)}
    if not schema.is_tensor:
        return _frame(names, cols, len(value), schema)
    out: dict[str, Any] = {}
    for i, (name, col) in enumerate(zip(names, cols, strict=True)):
        spec = schema.column_spec(name, i)
        out[name] = _tensor(col, spec) if isinstance(spec, TensorSpec) else col
    return out


def _length_checked(name: str, schema: Schema | None) -> bool:
    # MLflow compares lengths of required, non-array columns only (every column without names).
    if schema is None or not schema.has_names:
        return True
    spec = schema.column_spec(name, 0)
    return spec is not None and spec.required and not (isinstance(spec, ColSpec) and spec.type == "array")


def _tensor(value: Any, spec: TensorSpec) -> np.ndarray:
    label = f"input '{spec.name}'" if spec.name is not None else "the input"
    return array_from_json(value, spec.dtype, label, spec.dtype)


def _untyped_array(value: Any) -> np.ndarray:
    try:
        return np.array(value)
    except ValueError as exc:
        raise BadRequest(f"Invalid input. {exc}") from exc


def _parse_inputs(value: Any, schema: Schema | None) -> Any:
    """TF-serving columnar format, typed as MLflow's ``_cast_schema_type`` types it."""
    if schema is None:
        if isinstance(value, dict):
            return {k: _untyped_array(v) for k, v in value.items()}
        if isinstance(value, list) and value and all(isinstance(row, dict) for row in value):
            return [{k: _untyped_array(v) for k, v in row.items()} for row in value]
        return _untyped_array(value)
    specs = schema.inputs
    is_list = isinstance(value, list)
    if schema.has_names and len(specs) == 1 and is_list and not any(isinstance(x, dict) for x in value):
        value = {specs[0].name: value}  # one named input: the list is that input
    elif not schema.has_names and isinstance(value, dict):
        raise BadRequest(
            "Invalid input. Failed to parse input data. This model contains an un-named model signature "
            "which expects a single n-dimensional array or a single value as input, however, an input of "
            "type dictionary was found."
        )
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for i, (key, item) in enumerate(value.items()):
            spec = schema.column_spec(key, i)
            if isinstance(spec, TensorSpec):
                out[key] = _tensor(item, spec)
            elif isinstance(spec, ColSpec) and spec.type in SCALAR_TYPES and isinstance(item, list):
                out[key] = column_from_json(item, spec, column_label(key))
            else:
                out[key] = item  # a single value, a complex cell, or not in the schema
        return out
    if is_list and (not value or all(isinstance(row, dict) for row in value)):
        if schema.is_tensor:
            return value  # enforcement reports that a tensor model needs arrays
        names, cols = _transpose_records(value, "inputs must be a list of objects")
        return _frame(names, cols, len(value), schema)
    first = specs[0]
    if isinstance(first, TensorSpec):
        return _tensor(value, first)
    if not is_list:
        return value  # one value: enforcement makes it a one-row table
    dtype = COLUMN_DTYPES.get(first.type, np.dtype(object))
    if dtype.kind == "O":
        return np.array(value, dtype=object)
    return array_from_json(value, dtype, "the input", first.type)
