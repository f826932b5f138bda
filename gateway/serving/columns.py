"""JSON values to numpy: the conversions behind every ``/invocations`` body format.

Two families, mirroring MLflow's two stages:

* ``array_from_json`` / ``column_from_json`` / ``infer_column`` turn decoded JSON (Python lists)
  into numpy arrays. This is MLflow's lenient serving pre-cast (``Series.astype``,
  ``np.array(x, dtype=spec)``), minus the cases where it silently corrupts data: a non-whole
  number into an integer type, an integer out of the type's range, a number beyond float32,
  anything but ``true``/``false`` into a boolean, a timezone-aware datetime.
* ``enforce_column`` checks an array that already exists against a column type with MLflow's
  strict ``_enforce_mlflow_datatype`` widening table, and checks complex cells
  (array / object / map) like ``_enforce_array`` / ``_enforce_object`` / ``_enforce_map``.

Errors: values that cannot be converted at all raise ``BadRequest`` starting with MLflow's
``Invalid input.``; values MLflow would accept but we refuse, and type mismatches, raise
``InvalidParameter`` starting with MLflow's ``Incompatible input types for ...``. Messages name
the column and the expected type and show at most a short excerpt of one offending value.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import numpy as np
import orjson

from gateway.errors import BadRequest, InvalidParameter


class ColSpec(Protocol):
    """What these conversions read of ``signature.ColSpec`` (declared here: signature imports us)."""

    @property
    def name(self) -> str | None: ...
    @property
    def type(self) -> str: ...
    @property
    def required(self) -> bool: ...
    @property
    def items(self) -> ColSpec | None: ...
    @property
    def properties(self) -> tuple[ColSpec, ...] | None: ...
    @property
    def values(self) -> ColSpec | None: ...


# MLflow DataType name -> dtype of a column holding it (object for strings, bytes and complex cells).
COLUMN_DTYPES: dict[str, np.dtype[Any]] = {
    "boolean": np.dtype(np.bool_),
    "integer": np.dtype(np.int32),
    "long": np.dtype(np.int64),
    "float": np.dtype(np.float32),
    "double": np.dtype(np.float64),
    "string": np.dtype(object),
    "binary": np.dtype(object),
    "datetime": np.dtype("datetime64[ns]"),
}
SCALAR_TYPES = frozenset(COLUMN_DTYPES)
COMPLEX_TYPES = frozenset({"array", "object", "map", "any", "sparkml_vector"})
_NUMERIC_TYPES = frozenset({"integer", "long", "float", "double", "boolean", "datetime"})
_OBJECT = np.dtype(object)
_F64 = np.dtype(np.float64)
_NS = np.dtype("datetime64[ns]")
# An ISO timestamp that carries an offset ("...T10:00:00Z", "... 10:00+02:00"): numpy would
# convert it to UTC with a warning, pandas keeps it tz-aware and MLflow then rejects it.
_TZ_SUFFIX = re.compile(r"[T ].*(?:Z|[+-]\d{2}(?::?\d{2})?)$")
_MAX_EXACT_FLOAT_INT = 2.0**53


# --------------------------------------------------------------------------- messages


def show(value: Any, limit: int = 40) -> str:
    """A short JSON-looking excerpt of one value for an error message (never a whole payload)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # JSON has no NaN/Infinity; orjson would print null
    try:
        text = orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()
    except TypeError:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def type_label(spec: ColSpec, limit: int = 120) -> str:
    """A compact type name: ``long``, ``array<double>``, ``object{a: string, b?: long}``, ``map<string>``."""
    text = _type_label(spec)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _type_label(spec: ColSpec) -> str:
    if spec.type in ("array", "sparkml_vector") and spec.items is not None:
        return f"array<{_type_label(spec.items)}>"
    if spec.type == "object" and spec.properties is not None:
        inner = ", ".join(f"{p.name}{'' if p.required else '?'}: {_type_label(p)}" for p in spec.properties)
        return "object{" + inner + "}"
    if spec.type == "map" and spec.values is not None:
        return f"map<{_type_label(spec.values)}>"
    return spec.type


def cannot_convert(label: str, expected: object, detail: object) -> BadRequest:
    """MLflow's pre-cast failure (BAD_REQUEST): the value cannot be turned into the type at all."""
    text = str(detail)  # numpy quotes the offending value: keep only its start
    if len(text) > 160:
        text = text[:157] + "..."
    return BadRequest(
        f"Invalid input. Data is not compatible with model signature. "
        f"Failed to convert {label} to type {expected}: {text}"
    )


def incompatible(label: str, detail: str, expected: object) -> InvalidParameter:
    """A value or array that does not fit the signature (INVALID_PARAMETER_VALUE)."""
    return InvalidParameter(f"Incompatible input types for {label}: {detail}; expected {expected}.")


def column_label(name: str | int | None) -> str:
    if name is None:
        return "the input"
    return f"column '{name}'" if isinstance(name, str) else f"column {name}"


# --------------------------------------------------------------------------- JSON -> arrays


def array_from_json(data: Any, dtype: np.dtype[Any], label: str, expected: object) -> np.ndarray:
    """``np.array(data, dtype=dtype)`` as MLflow's serving path does it, refusing silent corruption.

    ``data`` is decoded JSON (nested lists or a scalar); the result may have any rank.
    """
    kind = dtype.kind
    if kind == "f":
        return _floats(data, dtype, label, expected)
    if kind in "iu":
        return _ints(data, dtype, label, expected)
    if kind == "b":
        return _bools(data, label, expected)
    if kind == "O":
        try:
            return np.array(data, dtype=_OBJECT)
        except ValueError as exc:
            raise cannot_convert(label, expected, exc) from exc
    if kind == "M":
        return _datetimes(data, dtype, label, expected)
    if kind in "US" and any(leaf is None for leaf in _leaves(data)):
        raise incompatible(label, "null is not a string", expected)  # numpy would write 'None'

    try:
        return np.array(data, dtype=dtype)
    except (ValueError, TypeError, OverflowError, UnicodeError) as exc:
        raise cannot_convert(label, expected, exc) from exc


def _floats(data: Any, dtype: np.dtype[Any], label: str, expected: object) -> np.ndarray:
    try:
        wide = np.array(data, dtype=_F64)
    except (ValueError, TypeError, OverflowError) as exc:
        raise cannot_convert(label, expected, exc) from exc
    if dtype == _F64:
        return wide
    if not wide.size or (np.abs(wide) <= np.finfo(dtype).max).all():
        return wide.astype(dtype)
    # Rare: NaN, infinity or a value too large for the narrower type (numpy would make it inf).
    with np.errstate(over="ignore"):
        narrow = wide.astype(dtype)
    overflow = np.isinf(narrow) & np.isfinite(wide)
    if overflow.any():
        bad = wide[overflow].flat[0]
        raise incompatible(label, f"{show(float(bad))} is out of range for {dtype.name}", expected)
    return narrow


def _ints(data: Any, dtype: np.dtype[Any], label: str, expected: object) -> np.ndarray:
    info = np.iinfo(dtype)
    try:
        arr = np.array(data)
    except (ValueError, OverflowError) as exc:
        raise cannot_convert(label, expected, exc) from exc
    kind = arr.dtype.kind
    if kind == "f" and arr.size and np.abs(arr).max() > _MAX_EXACT_FLOAT_INT:
        kind = "O"  # mixed ints and floats past 2**53: check each value exactly
    if kind in "iu":
        if arr.dtype != dtype and arr.size:
            low, high = arr.min(), arr.max()
            if low < info.min or high > info.max:
                bad = low if low < info.min else high
                raise incompatible(label, f"{show(int(bad))} is out of range for {dtype.name}", expected)
        return arr.astype(dtype, copy=False)
    if kind == "f":
        whole = np.isfinite(arr) & (arr == np.floor(arr))
        if not whole.all():
            bad = arr[~whole].flat[0]
            raise incompatible(label, f"{show(float(bad))} is not a whole number", expected)
        out_of_range = (arr < float(info.min)) | (arr >= float(info.max) + 1.0)
        if out_of_range.any():
            bad = arr[out_of_range].flat[0]
            raise incompatible(label, f"{show(float(bad))} is out of range for {dtype.name}", expected)
        return arr.astype(dtype)
    if kind == "b":
        return arr.astype(dtype)  # true/false -> 1/0, as pandas and numpy cast them
    # Strings, nulls, objects or a mix: convert value by value for an exact message.
    converted = _map_leaves(data, lambda v: _int_leaf(v, label, expected))
    try:
        ints = np.array(converted)
    except (ValueError, OverflowError) as exc:
        raise cannot_convert(label, expected, exc) from exc
    if ints.dtype.kind not in "iu" and ints.size:
        raise cannot_convert(label, expected, "nested values have different shapes")
    if ints.size:
        low, high = ints.min(), ints.max()
        if low < info.min or high > info.max:
            bad = low if low < info.min else high
            raise incompatible(label, f"{show(int(bad))} is out of range for {dtype.name}", expected)
    return ints.astype(dtype)


def _int_leaf(value: Any, label: str, expected: object) -> int:
    if isinstance(value, bool | int | np.integer | np.bool_):
        return int(value)
    if isinstance(value, float | np.floating):
        if math.isfinite(value) and float(value).is_integer():
            return int(value)
        raise incompatible(label, f"{show(float(value))} is not a whole number", expected)
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError as exc:
            raise cannot_convert(label, expected, exc) from exc
    if value is None:
        raise cannot_convert(label, expected, "null values are not allowed in an integer column")
    raise cannot_convert(label, expected, f"{show(value)} is not a number")


def _bools(data: Any, label: str, expected: object) -> np.ndarray:
    try:
        arr = np.array(data)
    except ValueError as exc:
        raise cannot_convert(label, expected, exc) from exc
    if arr.dtype.kind == "b" or arr.size == 0:
        return arr.astype(np.bool_, copy=False)
    # pandas' astype(bool) turns null into False and every non-empty string ("false") into True.
    for leaf in _leaves(data):
        if not isinstance(leaf, bool | np.bool_):
            raise incompatible(label, f"{show(leaf)} is not a boolean", expected)
    raise cannot_convert(label, expected, "nested values have different shapes")


def _datetimes(data: Any, dtype: np.dtype[Any], label: str, expected: object) -> np.ndarray:
    for leaf in _leaves(data):
        if isinstance(leaf, str) and _TZ_SUFFIX.search(leaf):
            raise incompatible(
                label,
                f"{show(leaf)} is timezone-aware; only timezone-naive datetimes are supported",
                expected,
            )
    try:
        return np.array(data, dtype=dtype)
    except (ValueError, TypeError, OverflowError) as exc:
        raise cannot_convert(label, expected, exc) from exc


def _leaves(data: Any) -> Iterator[Any]:
    if isinstance(data, list | tuple):
        for item in data:
            yield from _leaves(item)
    else:
        yield data


def _map_leaves(data: Any, fn: Any) -> Any:
    if isinstance(data, list | tuple):
        return [_map_leaves(item, fn) for item in data]
    return fn(data)


def object_column(values: Sequence[Any]) -> np.ndarray:
    """A 1-D object array holding ``values`` as cells (lists stay lists, never a 2-D array)."""
    return np.fromiter(values, dtype=_OBJECT, count=len(values))


def column_from_json(values: Sequence[Any], spec: ColSpec, label: str) -> np.ndarray:
    """One column of decoded JSON cells converted to ``spec``'s type (lenient pre-cast).

    Strings, ``any`` and complex cells are kept as they are in an object array (complex cells are
    checked by ``enforce_column``); ``binary`` cells are base64-decoded.
    """
    kind = spec.type
    if kind in _NUMERIC_TYPES:
        arr = array_from_json(values, COLUMN_DTYPES[kind], label, kind)
        if arr.ndim != 1:
            raise cannot_convert(label, kind, "cells must be single values, got nested lists")
        return arr
    if kind == "binary":
        return object_column([_b64decode(v, label) for v in values])
    return object_column(values)


def _b64decode(value: Any, label: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if not isinstance(value, str):
        raise cannot_convert(label, "binary", f"{show(value)} is not a base64 string")
    try:
        return base64.decodebytes(value.encode("utf-8"))
    except (binascii.Error, ValueError) as exc:
        raise cannot_convert(label, "binary", exc) from exc


def infer_column(values: Sequence[Any]) -> np.ndarray:
    """A column without a signature type, with the dtype pandas would infer.

    ints -> int64, floats or ints mixed with floats/nulls -> float64 (null -> NaN), bools -> bool,
    anything else (strings, nulls, mixed, lists, dicts) -> object.
    """
    types = set(map(type, values))
    if types == {int}:
        try:
            return np.array(values, dtype=np.int64)
        except OverflowError:
            return object_column(values)
    if types == {float} or (types <= {int, float, type(None)} and types & {int, float}):
        try:
            return np.array(values, dtype=_F64)
        except OverflowError:
            return object_column(values)
    if types == {bool}:
        return np.array(values, dtype=np.bool_)
    return object_column(values)


# --------------------------------------------------------------------------- strict checks


def enforce_column(arr: np.ndarray, spec: ColSpec, label: str) -> np.ndarray:
    """Check a 1-D array against ``spec`` with MLflow's strict widening rules; return it converted.

    Allowed: same dtype; int32 -> long; float32 -> double; int8/16/32 -> double; unsigned ->
    strictly wider signed; int64 -> float/double only if every value is 0 or 1; any datetime64
    precision -> ns; object -> string/binary/boolean as is; U -> string, S -> binary.
    """
    kind = spec.type
    if kind in COMPLEX_TYPES:
        return _enforce_cells(arr, spec, label)
    target = COLUMN_DTYPES[kind]
    dtype = arr.dtype
    if kind == "string" or kind == "binary":
        if dtype == _OBJECT:
            return arr
        if dtype.kind == ("U" if kind == "string" else "S"):
            return arr.astype(_OBJECT)
        raise incompatible(label, f"can not safely convert {dtype} to {kind}", kind)
    if dtype == target:
        return arr
    if dtype == _OBJECT:
        if kind == "boolean":
            return arr  # MLflow passes object columns to a boolean type untouched
        if kind == "datetime":
            try:
                return arr.astype(_NS)
            except (ValueError, TypeError) as exc:
                raise incompatible(label, f"can not convert object to datetime ({exc})", kind) from exc
        arr = infer_column(arr.tolist())  # pandas' infer_objects
        dtype = arr.dtype
        if dtype == target:
            return arr
    if kind == "datetime":
        if dtype.kind == "M":
            return arr.astype(_NS)
        raise incompatible(label, f"can not safely convert {dtype} to datetime64[ns]", kind)
    if dtype.kind == target.kind:
        upcast = dtype.itemsize <= target.itemsize
    elif dtype.kind == "u" and target.kind == "i":
        upcast = dtype.itemsize < target.itemsize
    elif dtype.kind in "iu" and target == _F64:
        upcast = dtype.itemsize <= 6
    else:
        upcast = False
    if upcast:
        return arr.astype(target)
    if dtype == np.int64 and target.kind == "f" and np.isin(arr, (0, 1)).all():
        return arr.astype(target)
    hint = ""
    if dtype.kind == "f" and target.kind in "iu":
        nan = np.isnan(arr)
        if nan.any() and (arr[~nan] == np.floor(arr[~nan])).all():
            hint = " (integer columns cannot hold missing values; declare the column as double)"
    raise incompatible(label, f"can not safely convert {dtype} to {target}{hint}", kind)


def _enforce_cells(arr: np.ndarray, spec: ColSpec, label: str) -> np.ndarray:
    if spec.type == "any":
        return arr if arr.dtype == _OBJECT else object_column(arr.tolist())
    cells = arr.tolist() if arr.dtype != _OBJECT else arr
    out = np.empty(len(cells), dtype=_OBJECT)
    for row, cell in enumerate(cells):
        try:
            out[row] = check_value(cell, spec, spec.required)
        except ValueMismatch as exc:
            # MLflow's serving pre-cast runs these same checks and answers BAD_REQUEST.
            where = f"{label} (row {row})" if len(cells) > 1 else label
            raise cannot_convert(where, type_label(spec), exc) from None
    return out


class ValueMismatch(Exception):
    """One value does not fit a type; the message says why (without the whole value)."""


def check_value(value: Any, spec: ColSpec, required: bool) -> Any:
    """Check one JSON value against a (possibly nested) type and return it converted.

    MLflow's ``_enforce_type``. Scalars follow the same rules as columns (ints into float/double
    accepted, whole floats into integer types accepted) where MLflow's pandas-based check refuses
    them; nulls are accepted only where the value is optional.
    """
    kind = spec.type
    if kind == "any":
        return value
    if kind in ("array", "sparkml_vector"):
        items = spec.items
        if (not required or (items is not None and items.type == "any")) and (
            value is None or (isinstance(value, list | np.ndarray) and len(value) == 0)
        ):
            return value
        if isinstance(value, np.ndarray):
            value = value.tolist()
        if not isinstance(value, list):
            raise ValueMismatch(f"expected a list, got {_json_type(value)}")
        assert items is not None
        if items.type in SCALAR_TYPES:
            return [_check_item(v, items.type) for v in value]
        return [check_value(v, items, required) for v in value]
    if kind == "object":
        if not required and (value is None or value == {}):
            return value
        if not isinstance(value, dict):
            raise ValueMismatch(f"expected an object, got {_json_type(value)}")
        props = {str(p.name): p for p in spec.properties or ()}
        missing = sorted(n for n, p in props.items() if p.required and n not in value)
        if missing:
            raise ValueMismatch(f"Missing required properties: {missing}")
        unknown = sorted(str(k) for k in value if k not in props)
        if unknown:
            raise ValueMismatch(f"Invalid properties not defined in the schema found: {unknown}")
        out = {}
        for key, item in value.items():
            prop = props[key]
            try:
                out[key] = check_value(item, prop, prop.required)
            except ValueMismatch as exc:
                raise ValueMismatch(f"property '{key}': {exc}") from None
        return out
    if kind == "map":
        values = spec.values
        assert values is not None
        if (not required or values.type == "any") and (value is None or value == {}):
            return value
        if not isinstance(value, dict):
            raise ValueMismatch(f"expected an object (map), got {_json_type(value)}")
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueMismatch("Expected all keys in the map type data are string type.")
            try:
                out[key] = check_value(item, values, required)
            except ValueMismatch as exc:
                raise ValueMismatch(f"key '{key}': {exc}") from None
        return out
    # A scalar type.
    if value is None or (isinstance(value, float) and math.isnan(value)):
        if not required:
            return None
        raise ValueMismatch(f"null is not allowed; expected {kind}")
    return _check_scalar(value, kind)


def _check_item(value: Any, kind: str) -> Any:
    """An element of an array of scalars; nulls follow pandas (NaN for floats, kept for objects)."""
    if value is None:
        if kind in ("float", "double"):
            return math.nan
        if kind in ("integer", "long"):
            raise ValueMismatch(f"null is not allowed in an array of {kind}")
        return None
    return _check_scalar(value, kind)


def _check_scalar(value: Any, kind: str) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if kind == "boolean":
        if isinstance(value, bool):
            return value
    elif kind in ("integer", "long"):
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            bits = 31 if kind == "integer" else 63
            if -(2**bits) <= value < 2**bits:
                return value
            raise ValueMismatch(f"{show(value)} is out of range for {kind}")
        if isinstance(value, float):
            raise ValueMismatch(f"{show(value)} is not a whole number; expected {kind}")
    elif kind in ("float", "double"):
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif kind == "string":
        if isinstance(value, str):
            return value
    elif kind == "binary":
        if isinstance(value, str | bytes):
            return value  # MLflow does not base64-decode inside complex values either
    elif kind == "datetime" and isinstance(value, str):
        if _TZ_SUFFIX.search(value):
            raise ValueMismatch(f"{show(value)} is timezone-aware")
        try:
            return np.datetime64(value, "ns")
        except ValueError:
            raise ValueMismatch(f"{show(value)} is not an ISO 8601 datetime") from None
    raise ValueMismatch(f"{show(value)} is not {_article(kind)}")


def _article(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__
