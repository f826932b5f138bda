"""MLflow's strict type checks: an array that already exists against a column type, one JSON value
against a (possibly nested) type.

``enforce_column`` applies MLflow's ``_enforce_mlflow_datatype`` widening table and checks complex
cells (array / object / map) like ``_enforce_array`` / ``_enforce_object`` / ``_enforce_map``;
``check_value`` is MLflow's ``_enforce_type`` for one value (also used for params). Type mismatches
raise ``InvalidParameter`` starting with MLflow's ``Incompatible input types for ...``; a complex cell
that does not fit raises ``BadRequest`` as MLflow's serving pre-cast does. Schema-level enforcement
(column order, missing inputs, tensors, params) is in ``gateway.serving.enforcement``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gateway.error_text import json_type
from gateway.serving.conversion import (
    COLUMN_DTYPES,
    COMPLEX_TYPES,
    SCALAR_TYPES,
    TZ_SUFFIX,
    infer_column,
    object_column,
)
from gateway.serving.messages import cannot_convert, incompatible, show, type_label
from gateway.serving.types import ColumnSpec

_OBJECT = np.dtype(object)
_F64 = np.dtype(np.float64)
_NS = np.dtype("datetime64[ns]")


def enforce_column(arr: np.ndarray, spec: ColumnSpec, label: str) -> np.ndarray:
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


def _enforce_cells(arr: np.ndarray, spec: ColumnSpec, label: str) -> np.ndarray:
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


def check_value(value: Any, spec: ColumnSpec, required: bool) -> Any:
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
            raise ValueMismatch(f"expected a list, got {json_type(value)}")
        assert items is not None
        if items.type in SCALAR_TYPES:
            return [_check_item(v, items.type) for v in value]
        return [check_value(v, items, required) for v in value]
    if kind == "object":
        if not required and (value is None or value == {}):
            return value
        if not isinstance(value, dict):
            raise ValueMismatch(f"expected an object, got {json_type(value)}")
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
            raise ValueMismatch(f"expected an object (map), got {json_type(value)}")
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
        if TZ_SUFFIX.search(value):
            raise ValueMismatch(f"{show(value)} is timezone-aware")
        try:
            return np.datetime64(value, "ns")
        except ValueError:
            raise ValueMismatch(f"{show(value)} is not an ISO 8601 datetime") from None
    raise ValueMismatch(f"{show(value)} is not {_article(kind)}")


def _article(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"
