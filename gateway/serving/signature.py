"""Model signatures: the model (ColSpec, TensorSpec, ParamSpec, Schema, Signature) and reading it from
an MLmodel file.

``parse_signature`` reads MLmodel's ``signature`` mapping (``inputs``/``outputs``/``params`` are
JSON strings) with MLflow's rules (``mlflow.types.schema``) and raises ``InvalidPackage`` naming
the field when a rule is broken. ``check_param`` validates one param value against its spec
(MLflow's widening); parsing uses it for defaults and ``gateway.serving.enforcement`` for requests.

Enforcing a signature on requests lives in ``gateway.serving.enforcement``. Every message names the
field and never echoes the whole schema. Differences from MLflow are listed in docs/compatibility.md.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from gateway.errors import InvalidPackage
from gateway.serving.conversion import SCALAR_TYPES
from gateway.serving.messages import show
from gateway.serving.type_enforcement import ValueMismatch, check_value

_KNOWN_TYPES = ", ".join([*SCALAR_TYPES, "array", "object", "map", "any"])


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
    # The same names as a list when they are unique: a request's ``columns`` equal to it need no checks.
    unique_name_list: list[str] | None = None


@dataclass(frozen=True)
class Schema:
    """A list of ColSpecs or of TensorSpecs (never both); all named or all unnamed."""

    inputs: tuple[ColSpec, ...] | tuple[TensorSpec, ...]

    # Cached: every request asks (the schema never changes).
    @cached_property
    def is_tensor(self) -> bool:
        return isinstance(self.inputs[0], TensorSpec)

    @cached_property
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
        names = [s.name for s in specs if s.name is not None]
        return _ColumnPlan(
            specs=specs,
            by_name={s.name: s for s in specs if s.name is not None},
            required=tuple(s.name for s in specs if s.required and s.name is not None),
            dict_is_one_row=any(s.type in ("array", "object", "sparkml_vector") for s in specs),
            double_names=frozenset(s.name for s in specs)  # type: ignore[misc]
            if specs and all(s.type == "double" and s.name is not None for s in specs)
            else None,
            ordered_names=tuple(names),
            unique_name_list=names if names and len(set(names)) == len(names) else None,
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
        except (ValueError, RecursionError) as exc:  # RecursionError: nested past Python's recursion limit
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
    if not isinstance(shape, list | tuple) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise _bad(at, f"tensor shape must be a list of integers (-1 for a variable dimension), got {show(shape)}")
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
            parsed.append(ColSpec(prop_name, sub_kind, bool(prop.get("required", True)), items, sub_props, values))
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
            default = check_param(entry["default"], spec)
        except ValueMismatch as exc:
            raise _bad(at, f"invalid default: {exc}") from None
        specs.append(ParamSpec(name, kind, default, shape, props))
    return tuple(specs)


# --------------------------------------------------------------------------- param values


def check_param(value: Any, spec: ParamSpec) -> Any:
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


__all__ = [
    "ColSpec",
    "ParamSpec",
    "Schema",
    "Signature",
    "TensorSpec",
    "check_param",
    "parse_signature",
    "signature_to_dict",
]
