"""Model signatures: read them from an MLmodel file and enforce them on requests, in numpy.

``parse_signature`` reads MLmodel's ``signature`` mapping (``inputs``/``outputs``/``params`` are
JSON strings) with MLflow's rules (``mlflow.types.schema``) and raises ``InvalidPackage`` naming
the field when a rule is broken. ``enforce_input`` and ``enforce_params`` do what MLflow's
``_enforce_schema`` and ``_enforce_params_schema`` do, without pandas:

* column schemas: a ``Frame`` (or a dict / array / scalar coerced to one as MLflow coerces it to a
  DataFrame) is rebuilt in schema order with only schema columns, each checked and widened;
* tensor schemas: rank, every fixed dimension and the exact dtype; a ``Frame`` is converted to the
  tensor(s) as MLflow converts a DataFrame;
* params: defaults filled in, MLflow's widening, every failure listed in one error.

Every message names the column, tensor or param and the expected type, and never echoes the
input data or the whole schema. Differences from MLflow are listed in docs/compatibility.md.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from gateway.errors import InvalidPackage, InvalidParameter
from gateway.serving.columns import (
    SCALAR_TYPES,
    ValueMismatch,
    array_from_json,
    check_value,
    column_from_json,
    column_label,
    enforce_column,
    infer_column,
    object_column,
    show,
)
from gateway.serving.types import Frame, ModelInput

_logger = logging.getLogger("gateway.serving")

_KNOWN_TYPES = ", ".join([*SCALAR_TYPES, "array", "object", "map", "any"])
_MAX_NAMES_SHOWN = 20


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class ColSpec:
    """One column (or, nested, one array item / object property / map value) of a column schema.

    ``type`` is an MLflow DataType name (boolean, integer, long, float, double, string, binary,
    datetime) or ``array`` (``items``), ``object`` (``properties``, sorted by name, each a named
    ColSpec whose ``required`` applies), ``map`` (``values``, string keys), ``any``, or
    ``sparkml_vector`` (an array of double).
    """

    name: str | None
    type: str
    required: bool = True
    items: ColSpec | None = None
    properties: tuple[ColSpec, ...] | None = None
    values: ColSpec | None = None

    def to_dict(self) -> dict[str, Any]:
        """MLflow's JSON form of a column (``{"type": ..., "name": ..., "required": ...}``)."""
        out = _type_dict(self)
        if self.name is not None:
            out["name"] = self.name
        out["required"] = self.required
        return out


@dataclass(frozen=True)
class TensorSpec:
    """One tensor: numpy ``dtype`` and ``shape`` where -1 is a variable dimension."""

    name: str | None
    dtype: np.dtype[Any]
    shape: tuple[int, ...]

    @property
    def required(self) -> bool:
        return True  # MLflow has no optional tensors

    def to_dict(self) -> dict[str, Any]:
        spec = {"dtype": self.dtype.name, "shape": list(self.shape)}
        if self.name is None:
            return {"type": "tensor", "tensor-spec": spec}
        return {"name": self.name, "type": "tensor", "tensor-spec": spec}


@dataclass(frozen=True)
class ParamSpec:
    """One inference parameter: DataType name (or ``object`` with ``properties``), default, shape.

    ``shape`` is None for a single value or ``(-1,)`` for a list. ``default`` is already converted
    (a datetime default is a ``datetime.date``/``datetime.datetime``).
    """

    name: str
    type: str
    default: Any
    shape: tuple[int, ...] | None = None
    properties: tuple[ColSpec, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        default = self.default
        if self.type == "datetime" and default is not None:
            default = [v.isoformat() for v in default] if self.shape else default.isoformat()
        out: dict[str, Any] = {
            "name": self.name,
            "default": default,
            "shape": list(self.shape) if self.shape is not None else None,
        }
        if self.type == "object":
            out.update(_type_dict(ColSpec(None, "object", properties=self.properties)))
        else:
            out["type"] = self.type
        return out


@dataclass(frozen=True)
class _ColumnPlan:
    """Per-schema lookups computed once: the hot path only does dict gets."""

    specs: tuple[ColSpec, ...]
    by_name: dict[str, ColSpec]
    required: tuple[str, ...]
    # MLflow turns a dict into a single row when any column is an array or an object.
    dict_is_one_row: bool
    # Every column named and ``double`` (iris-like tables): the names, for the block fast path.
    double_names: frozenset[str] | None = None
    ordered_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class Schema:
    """A list of ColSpecs or of TensorSpecs (never both); all named or all unnamed."""

    inputs: tuple[ColSpec, ...] | tuple[TensorSpec, ...]

    @property
    def is_tensor(self) -> bool:
        return isinstance(self.inputs[0], TensorSpec)

    @property
    def has_names(self) -> bool:
        return self.inputs[0].name is not None

    @property
    def specs(self) -> Sequence[ColSpec | TensorSpec]:
        return self.inputs

    def input_names(self) -> list[str | int]:
        """Names, or positions for an unnamed schema (MLflow's ``input_names``)."""
        return [spec.name if spec.name is not None else i for i, spec in enumerate(self.specs)]

    def required_names(self) -> list[str | int]:
        return [n for n, spec in zip(self.input_names(), self.specs, strict=True) if spec.required]

    def optional_names(self) -> list[str | int]:
        return [n for n, spec in zip(self.input_names(), self.specs, strict=True) if not spec.required]

    def to_list(self) -> list[dict[str, Any]]:
        return [spec.to_dict() for spec in self.inputs]

    def column_spec(self, key: str | int, position: int) -> ColSpec | TensorSpec | None:
        """The spec that types an incoming column: by name, by position when unnamed, or the single
        unnamed tensor for every column (MLflow's pre-cast). None for a column the schema lacks."""
        if self.has_names:
            return self._by_name.get(key) if isinstance(key, str) else None
        if self.is_tensor:
            return self.inputs[0]
        return self.inputs[position] if position < len(self.inputs) else None

    @cached_property
    def _by_name(self) -> dict[str | None, ColSpec | TensorSpec]:
        return {spec.name: spec for spec in self.inputs}

    @cached_property
    def plan(self) -> _ColumnPlan:
        """The compiled column plan (column schemas only), cached on the schema."""
        specs = tuple(s for s in self.inputs if isinstance(s, ColSpec))
        return _ColumnPlan(
            specs=specs,
            by_name={s.name: s for s in specs if s.name is not None},
            required=tuple(s.name for s in specs if s.required and s.name is not None),
            dict_is_one_row=any(s.type in ("array", "object", "sparkml_vector") for s in specs),
            double_names=frozenset(s.name for s in specs)  # type: ignore[misc]
            if specs and all(s.type == "double" and s.name is not None for s in specs)
            else None,
            ordered_names=tuple(s.name for s in specs if s.name is not None),
        )


@dataclass(frozen=True)
class Signature:
    """A model's signature; any part may be missing."""

    inputs: Schema | None
    outputs: Schema | None
    params: tuple[ParamSpec, ...] | None


def signature_to_dict(sig: Signature) -> dict[str, list[dict[str, Any]] | None]:
    """The signature as plain JSON lists for display.

    ``{"inputs": [...], "outputs": [...], "params": [...]}``; a missing part is None.
    """
    return {
        "inputs": sig.inputs.to_list() if sig.inputs else None,
        "outputs": sig.outputs.to_list() if sig.outputs else None,
        "params": [p.to_dict() for p in sig.params] if sig.params else None,
    }


def _type_dict(spec: ColSpec) -> dict[str, Any]:
    if spec.type == "array" and spec.items is not None:
        return {"type": "array", "items": _type_dict(spec.items)}
    if spec.type == "object":
        props = {p.name: {**_type_dict(p), "required": p.required} for p in spec.properties or ()}
        return {"type": "object", "properties": props}
    if spec.type == "map" and spec.values is not None:
        return {"type": "map", "values": _type_dict(spec.values)}
    return {"type": spec.type}


# --------------------------------------------------------------------------- parsing


def parse_signature(raw: Mapping[str, Any] | None) -> Signature | None:
    """Read MLmodel's ``signature`` mapping; None when the model has none.

    Raises ``InvalidPackage`` naming the field (``signature.inputs[2] ('age')``) and the rule.
    Unknown keys are ignored at every level.
    """
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise InvalidPackage(f"Invalid model signature: expected a mapping, got {type(raw).__name__}.")
    return Signature(
        inputs=_parse_schema(_load(raw.get("inputs"), "inputs"), "inputs"),
        outputs=_parse_schema(_load(raw.get("outputs"), "outputs"), "outputs"),
        params=_parse_params(_load(raw.get("params"), "params")),
    )


def _bad(where: str, problem: str) -> InvalidPackage:
    return InvalidPackage(f"Invalid model signature: {where}: {problem}.")


def _load(value: Any, part: str) -> list[Any] | None:
    where = f"signature.{part}"
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise _bad(where, f"not valid JSON ({exc})") from exc
        if value is None:
            return None
    if not isinstance(value, list):
        raise _bad(where, f"expected a JSON list of specs, got {type(value).__name__}")
    return value


def _parse_schema(entries: list[Any] | None, part: str) -> Schema | None:
    if entries is None:
        return None
    where = f"signature.{part}"
    if not entries:
        raise _bad(where, "must not be empty")
    specs: list[ColSpec | TensorSpec] = []
    explicit_optional = False
    for i, entry in enumerate(entries):
        at = f"{where}[{i}]"
        if not isinstance(entry, Mapping):
            raise _bad(at, f"expected an object, got {type(entry).__name__}")
        name = entry.get("name")
        if name is not None:
            if not isinstance(name, str):
                raise _bad(at, f"'name' must be a string, got {show(name)}")
            at = f"{at} ('{name}')"
        if entry.get("type") == "tensor":
            specs.append(_parse_tensor(entry, name, at))
            continue
        kind, items, props, values = _parse_type(entry, at)
        required = entry.get("required")
        # MLflow reads a missing 'required' as True for plain types but as None (optional) for
        # array/object/map/any columns; only an explicit false counts against unnamed schemas.
        explicit_optional = explicit_optional or required is False
        is_required = bool(required) if required is not None else kind in SCALAR_TYPES
        specs.append(ColSpec(name, kind, is_required, items, props, values))
    named = [s.name is not None for s in specs]
    if any(named) and not all(named):
        raise _bad(where, "mixes named and unnamed inputs; name all of them or none")
    tensors = [isinstance(s, TensorSpec) for s in specs]
    if any(tensors) and not all(tensors):
        raise _bad(where, "mixes column specs and tensor specs; use one kind")
    if all(tensors) and len(specs) > 1 and not all(named):
        raise _bad(where, "has several tensors, which must all be named")
    if not any(named) and explicit_optional:
        raise _bad(where, "has unnamed optional inputs; name the inputs or make them required")
    if all(tensors):
        return Schema(tuple(s for s in specs if isinstance(s, TensorSpec)))
    return Schema(tuple(s for s in specs if isinstance(s, ColSpec)))


def _parse_tensor(entry: Mapping[str, Any], name: str | None, at: str) -> TensorSpec:
    info = entry.get("tensor-spec")
    if not isinstance(info, Mapping) or "dtype" not in info or "shape" not in info:
        raise _bad(at, "a tensor needs 'tensor-spec' with 'dtype' and 'shape'")
    try:
        dtype = np.dtype(info["dtype"])
    except TypeError as exc:
        raise _bad(at, f"unknown tensor dtype {show(info['dtype'])}") from exc
    if dtype.char in ("U", "S") and not dtype.name.isalpha():
        raise _bad(at, f"sized dtype {dtype.name!r} is not supported; use 'str', 'bytes' or 'object'")
    shape = info["shape"]
    if not isinstance(shape, list | tuple) or not all(
        isinstance(d, int) and not isinstance(d, bool) for d in shape
    ):
        raise _bad(
            at, f"tensor shape must be a list of integers (-1 for a variable dimension), got {show(shape)}"
        )
    return TensorSpec(name, dtype, tuple(shape))


def _parse_type(
    entry: Mapping[str, Any], at: str
) -> tuple[str, ColSpec | None, tuple[ColSpec, ...] | None, ColSpec | None]:
    kind = entry.get("type")
    if kind in SCALAR_TYPES or kind == "any":
        return kind, None, None, None
    if kind == "array":
        return kind, _parse_nested(entry.get("items"), f"{at} items"), None, None
    if kind == "sparkml_vector":
        return kind, ColSpec(None, "double"), None, None
    if kind == "object":
        props = entry.get("properties")
        if not isinstance(props, Mapping) or not props:
            raise _bad(at, "an object needs a non-empty 'properties' mapping")
        parsed = []
        for prop_name, prop in sorted(props.items()):
            prop_at = f"{at} property '{prop_name}'"
            sub_kind, items, sub_props, values = _parse_type(_mapping(prop, prop_at), prop_at)
            parsed.append(
                ColSpec(prop_name, sub_kind, bool(prop.get("required", True)), items, sub_props, values)
            )
        return kind, None, tuple(parsed), None
    if kind == "map":
        return kind, None, None, _parse_nested(entry.get("values"), f"{at} values")
    if kind is None:
        raise _bad(at, "missing 'type'")
    raise _bad(at, f"unknown type {show(kind)}; expected one of {_KNOWN_TYPES}")


def _mapping(value: Any, at: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _bad(at, f"expected an object with a 'type', got {show(value)}")
    return value


def _parse_nested(value: Any, at: str) -> ColSpec:
    kind, items, props, values = _parse_type(_mapping(value, at), at)
    return ColSpec(None, kind, True, items, props, values)


def _parse_params(entries: list[Any] | None) -> tuple[ParamSpec, ...] | None:
    if entries is None:
        return None
    specs: list[ParamSpec] = []
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        at = f"signature.params[{i}]"
        if not isinstance(entry, Mapping):
            raise _bad(at, f"expected an object, got {type(entry).__name__}")
        kind = entry.get("type") or entry.get("dtype")
        if "name" not in entry or kind is None or "default" not in entry:
            raise _bad(at, "a param needs 'name', 'type' (or 'dtype') and 'default'")
        name = str(entry["name"])
        at = f"{at} ('{name}')"
        if name in seen:
            raise _bad(at, "duplicated param name")
        seen.add(name)
        props = None
        if kind == "object":
            _, _, props, _ = _parse_type(entry, at)
        elif kind == "binary":
            raise _bad(at, "binary params are not supported")
        elif kind not in SCALAR_TYPES:
            raise _bad(at, f"unknown type {show(kind)}; expected one of {', '.join(SCALAR_TYPES)}, object")
        shape = entry.get("shape")
        if shape is not None:
            shape = tuple(shape) if isinstance(shape, list | tuple) else shape
            if shape != (-1,):
                raise _bad(at, f"shape must be null (one value) or [-1] (a list), got {show(shape)}")
        spec = ParamSpec(name, kind, None, shape, props)
        try:
            default = _check_param(entry["default"], spec)
        except ValueMismatch as exc:
            raise _bad(at, f"invalid default: {exc}") from None
        specs.append(ParamSpec(name, kind, default, shape, props))
    return tuple(specs)


# --------------------------------------------------------------------------- params


def enforce_params(
    params: dict[str, Any] | None, schema: Sequence[ParamSpec] | None
) -> dict[str, Any] | None:
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
                out[spec.name] = _check_param(params[spec.name], spec)
            except ValueMismatch as exc:
                errors.append(f"'{spec.name}': {exc}")
        else:
            out[spec.name] = spec.default
    if errors:
        raise InvalidParameter("Invalid parameters found: " + "; ".join(errors))
    if len(params) > len(out) and _logger.isEnabledFor(logging.DEBUG):
        _logger.debug("Ignoring params not in the signature: %s", sorted(set(params) - set(out)))
    return out


def _check_param(value: Any, spec: ParamSpec) -> Any:
    """MLflow's ``ParamSpec.validate_type_and_shape``: strict, but ints widen to float/double."""
    if spec.shape is not None:
        if not isinstance(value, list) or any(isinstance(v, list | dict) for v in value):
            raise ValueMismatch(f"expected a list of {spec.type} (shape [-1]), got {show(value)}")
        return [_param_value(v, spec.type) for v in value]
    if spec.type == "object":
        check_value(value, ColSpec(None, "object", properties=spec.properties), True)
        return value  # MLflow validates the object but hands the original to the model
    return _param_value(value, spec.type)


def _param_value(value: Any, kind: str) -> Any:
    if value is None:
        return None
    if isinstance(value, list | dict):
        raise ValueMismatch(f"expected a single {kind} value, got {show(value)}")
    if kind == "datetime":
        if isinstance(value, dt.date):
            return value
        if isinstance(value, str):
            try:
                converted = np.datetime64(value).item()
            except ValueError:
                converted = None
            if isinstance(converted, dt.date):
                return converted
        raise ValueMismatch(f"expected an ISO 8601 date or datetime, got {show(value)}")
    ok = {
        "boolean": isinstance(value, bool),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "long": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, int | float) and not isinstance(value, bool),
        "double": isinstance(value, int | float) and not isinstance(value, bool),
        "string": isinstance(value, str),
    }[kind]
    if not ok:
        raise ValueMismatch(f"expected {kind}, got {show(value)}")
    if kind in ("float", "double"):
        try:
            return float(value)
        except OverflowError:
            raise ValueMismatch(f"{show(value)} is out of range for {kind}") from None
    return value


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
    cols = frame.columns
    if frame.block is not None and plan.double_names is not None and tuple(cols) == plan.ordered_names:
        # Built as one float64 matrix of exactly the schema's double columns, in order: nothing to do.
        return frame
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
        {
            k: enforce_column(cols[k], spec, column_label(k))
            for k, spec in zip(keys, plan.specs, strict=False)
        },
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
    "ColSpec",
    "ParamSpec",
    "Schema",
    "Signature",
    "TensorSpec",
    "enforce_input",
    "enforce_params",
    "parse_signature",
    "signature_to_dict",
]
