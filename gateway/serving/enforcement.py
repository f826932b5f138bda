"""Enforcing a model signature on a request, in numpy: what MLflow's ``_enforce_schema`` and
``_enforce_params_schema`` do, without pandas.

* column schemas: a ``Frame`` (or a dict / array / scalar coerced to one as MLflow coerces it to a
  DataFrame) is rebuilt in schema order with only schema columns, each checked and widened;
* tensor schemas: rank, every fixed dimension and the exact dtype; a ``Frame`` is converted to the
  tensor(s) as MLflow converts a DataFrame;
* params: defaults filled in, MLflow's widening, every failure listed in one error.

The signature model comes from ``gateway.serving.signature``. Every message names the column, tensor
or param and the expected type, and never echoes the input data or the whole schema. Differences
from MLflow are listed in docs/compatibility.md.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from gateway.errors import InvalidParameter
from gateway.serving.conversion import array_from_json, column_from_json, infer_column, object_column
from gateway.serving.messages import column_label
from gateway.serving.signature import ColSpec, ParamSpec, Schema, TensorSpec, check_param
from gateway.serving.type_enforcement import ValueMismatch, enforce_column
from gateway.serving.types import Frame, ModelInput

_logger = logging.getLogger("gateway.serving")

_MAX_NAMES_SHOWN = 20


# --------------------------------------------------------------------------- params


def enforce_params(params: dict[str, Any] | None, schema: Sequence[ParamSpec] | None) -> dict[str, Any] | None:
    """Check request params against the signature's params, filling in defaults.

    Without a param schema MLflow ignores params (None stays None, anything else becomes {}).
    Unknown keys are ignored. All invalid params are reported in one ``InvalidParameter``
    (``Invalid parameters found: 'k': ...; 't': ...``).
    """
    if schema is None:
        return None if params is None else {}
    params = params or {}
    out: dict[str, Any] = {}
    errors: list[str] = []
    for spec in schema:
        if spec.name in params:
            try:
                out[spec.name] = check_param(params[spec.name], spec)
            except ValueMismatch as exc:
                errors.append(f"'{spec.name}': {exc}")
        else:
            out[spec.name] = spec.default
    if errors:
        raise InvalidParameter("Invalid parameters found: " + "; ".join(errors))
    if len(params) > len(out) and _logger.isEnabledFor(logging.DEBUG):
        _logger.debug("Ignoring params not in the signature: %s", sorted(set(params) - set(out)))
    return out


# --------------------------------------------------------------------------- inputs


def enforce_input(data: Any, schema: Schema | None) -> ModelInput | Any:
    """Check and convert a parsed request against the input schema (no schema: unchanged).

    Column schema -> ``Frame`` in schema order holding only schema columns. Unnamed tensor ->
    ``np.ndarray``; named tensors -> ``dict`` of arrays in schema order. Raises
    ``InvalidParameter`` naming the input and the expected type.
    """
    if schema is None:
        return data
    if schema.is_tensor:
        return _enforce_tensors(data, schema)
    frame = _as_frame(data, schema)
    plan = schema.plan
    if frame.block is not None and plan.double_names is not None and frame.names == plan.ordered_names:
        # Built as one float64 matrix of exactly the schema's double columns, in order: nothing to do.
        return frame
    cols = frame.columns
    if schema.has_names:
        missing = [name for name in plan.required if name not in cols]
        if missing:
            _raise_missing(missing, [c for c in cols if c not in plan.by_name])
        out = {}
        for spec in plan.specs:
            arr = cols.get(spec.name)  # type: ignore[arg-type]
            if arr is not None:
                out[spec.name] = enforce_column(arr, spec, column_label(spec.name))
        enforced = Frame(out, frame.nrows)  # type: ignore[arg-type]
        if frame.block is not None and enforced.same_columns_as(frame):
            enforced.block = frame.block  # nothing reordered, dropped or cast
        return enforced
    keys = list(cols)
    if len(keys) < len(plan.specs):
        raise InvalidParameter(
            f"Model inference is missing inputs. The model signature declares {len(plan.specs)} inputs "
            f"but the provided value only has {len(keys)} inputs. Note: the inputs were not named in "
            "the signature so we can only verify their count."
        )
    return Frame(
        {k: enforce_column(cols[k], spec, column_label(k)) for k, spec in zip(keys, plan.specs, strict=False)},
        frame.nrows,
    )


def _raise_missing(missing: list[Any], extra: list[Any]) -> None:
    message = f"Model is missing inputs {missing}."
    if extra:
        shown = repr(extra[:_MAX_NAMES_SHOWN])
        more = f" (and {len(extra) - _MAX_NAMES_SHOWN} more)" if len(extra) > _MAX_NAMES_SHOWN else ""
        message += f" Note that there were extra inputs: {shown}{more}."
    raise InvalidParameter(message)


def _as_frame(data: Any, schema: Schema) -> Frame:
    """Coerce any parsed input to a Frame the way MLflow coerces it to a DataFrame."""
    if isinstance(data, Frame):
        return data
    if isinstance(data, dict):
        return _dict_to_frame(data, schema)
    if isinstance(data, np.ndarray):
        if data.ndim == 0:
            return _typed_frame({0: [data.item()]}, 1, schema)
        if data.ndim == 1:
            return Frame({0: data}, len(data))
        if data.ndim == 2:
            return Frame({j: data[:, j] for j in range(data.shape[1])}, data.shape[0])
        raise _not_a_frame(f"a {data.ndim}-dimensional array cannot be a table")
    if isinstance(data, list):
        if data and all(isinstance(row, dict) for row in data):
            keys: dict[str, None] = {}
            for row in data:
                keys.update(dict.fromkeys(row))
            return _typed_frame({k: [row.get(k) for row in data] for k in keys}, len(data), schema)
        if data and all(isinstance(row, list) for row in data):
            width = len(data[0])
            if any(len(row) != width for row in data):
                raise _not_a_frame("rows have different lengths")
            return _typed_frame({j: [row[j] for row in data] for j in range(width)}, len(data), schema)
        return _typed_frame({0: list(data)}, len(data), schema)
    if data is None or np.isscalar(data):
        return _typed_frame({0: [data]}, 1, schema)
    raise _not_a_frame(f"got {type(data).__name__}")


def _not_a_frame(detail: str) -> InvalidParameter:
    return InvalidParameter(
        "This model contains a column-based signature, which suggests a DataFrame input. "
        f"The input could not be read as a table: {detail}."
    )


def _is_cell(value: Any) -> bool:
    """MLflow's test for 'this dict value is one cell': a scalar or a list of strings."""
    if value is None or isinstance(value, str | bytes | bool | int | float | np.generic | dict):
        return True
    if isinstance(value, np.ndarray):
        return value.ndim == 0
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _is_column(value: Any) -> bool:
    return isinstance(value, list) or (isinstance(value, np.ndarray) and value.ndim > 0)


def _dict_to_frame(data: dict[str, Any], schema: Schema) -> Frame:
    # MLflow: one row when the schema has an array/object column or every value is a cell;
    # otherwise every value is a column (scalars broadcast).
    if schema.plan.dict_is_one_row or all(_is_cell(v) for v in data.values()):
        return _typed_frame({k: [v] for k, v in data.items()}, 1, schema)
    nrows = -1
    for key, value in data.items():
        if _is_column(value):
            if nrows not in (-1, len(value)):
                raise _not_a_frame(f"all columns must have the same length; '{key}' has {len(value)} values")
            nrows = len(value)
    raw: dict[str | int, Any] = {}
    for key, value in data.items():
        if isinstance(value, np.ndarray) and value.ndim > 1:
            raw[key] = object_column(value.tolist())
        elif _is_column(value):
            raw[key] = value
        else:
            raw[key] = [value] * nrows
    return _typed_frame(raw, nrows, schema)


def _typed_frame(raw: dict[str | int, Any], nrows: int, schema: Schema) -> Frame:
    """Columns of decoded JSON converted with the schema's types (ndarrays are kept as they are)."""
    columns: dict[str | int, np.ndarray] = {}
    for position, (key, values) in enumerate(raw.items()):
        if isinstance(values, np.ndarray):
            columns[key] = values
            continue
        spec = schema.column_spec(key, position)
        if isinstance(spec, ColSpec):
            columns[key] = column_from_json(values, spec, column_label(key))
        elif schema.has_names:
            continue  # not in the schema: dropped by enforcement anyway, keep only its name
        else:
            columns[key] = infer_column(values)
    for key in raw:
        columns.setdefault(key, _EMPTY)
    return Frame(columns, nrows)


_EMPTY = np.empty(0, dtype=object)


# --------------------------------------------------------------------------- tensors


def _enforce_tensors(data: Any, schema: Schema) -> np.ndarray | dict[str, np.ndarray]:
    specs = [s for s in schema.inputs if isinstance(s, TensorSpec)]
    if schema.has_names:
        if isinstance(data, np.ndarray) and len(specs) == 1:
            data = {specs[0].name: data}
        present = data.columns if isinstance(data, Frame) else data if isinstance(data, dict) else {}
        missing = [s.name for s in specs if s.name not in present]
        if missing:
            _raise_missing(missing, [k for k in present if k not in schema._by_name])
        out: dict[str, np.ndarray] = {}
        for spec in specs:
            name = str(spec.name)
            if isinstance(data, Frame):
                out[name] = _column_to_tensor(data.columns[name], data.nrows, spec)
                continue
            value = present[name]
            if not isinstance(value, np.ndarray):
                raise InvalidParameter(
                    "This model contains a tensor-based model signature with input names, which suggests "
                    f"a dictionary input mapping input name to a numpy array, but input '{name}' is a "
                    f"{type(value).__name__}."
                )
            out[name] = _enforce_tensor(value, spec)
        return out
    spec = specs[0]
    if isinstance(data, Frame):
        if not data.columns or data.nrows == 0:
            raise InvalidParameter("Input DataFrame is empty.")
        if len(data.columns) == 1:
            return _column_to_tensor(next(iter(data.columns.values())), data.nrows, spec)
        if spec.shape != (-1, len(data.columns)):
            raise InvalidParameter(
                "This model contains a model signature with an unnamed input. Since the input data is "
                "a DataFrame containing multiple columns, the input shape must be of the structure "
                f"(-1, number_of_dataframe_columns). Instead, the input DataFrame passed had "
                f"{len(data.columns)} columns and an input shape of {spec.shape}."
            )
        return _enforce_tensor(np.column_stack(list(data.columns.values())), spec)
    if isinstance(data, np.ndarray):
        return _enforce_tensor(data, spec)
    raise InvalidParameter(
        "This model contains a tensor-based model signature with no input names, which suggests a "
        f"numpy array input or a DataFrame input with proper column values, but an input of type "
        f"{type(data).__name__} was found."
    )


def _tensor_label(spec: TensorSpec) -> str:
    return f" for input '{spec.name}'" if spec.name is not None else ""


def _enforce_tensor(values: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """MLflow's ``_enforce_tensor_spec``: ragged object arrays pass, else rank, dims and exact dtype."""
    expected, actual = spec.shape, values.shape
    if len(expected) == 1 and expected[0] == -1 and spec.dtype == np.dtype(object):
        return values
    if len(expected) > 1 and -1 in expected[1:] and len(actual) == 1 and values.dtype == np.dtype(object):
        return values
    if len(expected) != len(actual) or any(e not in (-1, a) for e, a in zip(expected, actual, strict=True)):
        raise InvalidParameter(
            f"Shape of input {actual} does not match expected shape {expected}{_tensor_label(spec)}."
        )
    dtype = values.dtype
    if dtype.char in ("U", "S"):
        dtype = np.dtype(str) if dtype.char == "U" else np.dtype(bytes)
    if dtype != spec.dtype:
        raise InvalidParameter(
            f"dtype of input {values.dtype} does not match expected dtype {spec.dtype}{_tensor_label(spec)}."
        )
    return values


def _column_to_tensor(col: np.ndarray, nrows: int, spec: TensorSpec) -> np.ndarray:
    """MLflow's ``_reshape_and_cast_pandas_column_values``: one DataFrame column -> one tensor."""
    where = f"input '{spec.name}'" if spec.name is not None else "the unnamed input"
    shape = spec.shape
    if not shape or shape[0] != -1 or -1 in shape[1:]:
        raise InvalidParameter(
            "For DataFrame input, the first dimension of shape must be a variable dimension and other "
            f"dimensions must be fixed, but in model signature the shape of {where} is {shape}."
        )
    first = col[0] if nrows else None
    if col.dtype != np.dtype(object) or not isinstance(first, list | np.ndarray):
        if shape not in ((-1,), (-1, 1)):
            raise InvalidParameter(
                f"The DataFrame column for {where} contains scalar values, which requires the shape "
                f"to be (-1,) or (-1, 1), but got tensor spec shape of {shape}."
            )
        if col.dtype != spec.dtype:
            col = array_from_json(col.tolist(), spec.dtype, where, spec.dtype)
        return _enforce_tensor(col.reshape(shape), spec)
    problem = InvalidParameter(
        f"The values in the DataFrame column for {where} could not be converted to the expected shape "
        f"{shape}. Ensure that every list has the same length and that the values can be "
        f"converted to {spec.dtype}."
    )
    if isinstance(first, list) and (not first or np.isscalar(first[0])):
        stacked = array_from_json(col.tolist(), spec.dtype, where, spec.dtype)
    elif isinstance(first, np.ndarray):
        try:
            stacked = np.vstack(col.tolist())
        except ValueError:
            raise problem from None
    else:
        raise InvalidParameter(
            "Because the model signature requires tensor spec input, the DataFrame values should be "
            "scalars, lists of scalars or numpy arrays of scalars; other types are not supported."
        )
    try:
        reshaped = stacked.reshape(shape)
    except ValueError:
        raise problem from None
    if stacked.ndim < 2 or len(reshaped) != nrows:
        raise problem
    return reshaped


__all__ = [
    "enforce_input",
    "enforce_params",
]
