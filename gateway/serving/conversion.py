"""JSON values to numpy: the conversions behind every ``/invocations`` body format.

``array_from_json`` / ``column_from_json`` / ``infer_column`` turn decoded JSON (Python lists) into
numpy arrays. This is MLflow's lenient serving pre-cast (``Series.astype``,
``np.array(x, dtype=spec)``), minus the cases where it silently corrupts data: a non-whole number
into an integer type, an integer out of the type's range, a number beyond float32, anything but
``true``/``false`` into a boolean, a timezone-aware datetime. The strict checks of an array that
already exists are in ``gateway.serving.type_enforcement``.

Errors: values that cannot be converted at all raise ``BadRequest`` starting with MLflow's
``Invalid input.``; values MLflow would accept but we refuse raise ``InvalidParameter`` starting
with MLflow's ``Incompatible input types for ...`` (``gateway.serving.messages``). Messages name
the column and the expected type and show at most a short excerpt of one offending value.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from gateway.serving.messages import cannot_convert, incompatible, show
from gateway.serving.types import ColumnSpec

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
# An ISO timestamp that carries an offset ("...T10:00:00Z", "... 10:00+02:00"): numpy would
# convert it to UTC with a warning, pandas keeps it tz-aware and MLflow then rejects it.
TZ_SUFFIX = re.compile(r"[T ].*(?:Z|[+-]\d{2}(?::?\d{2})?)$")
_MAX_EXACT_FLOAT_INT = 2.0**53


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
        if isinstance(leaf, str) and TZ_SUFFIX.search(leaf):
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


def column_from_json(values: Sequence[Any], spec: ColumnSpec, label: str) -> np.ndarray:
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
