"""Error-message pieces shared by request conversion and type enforcement.

Values are shown as short JSON-looking excerpts, never a whole payload; types as compact labels.
``cannot_convert`` is MLflow's pre-cast failure (``BAD_REQUEST``, starting with MLflow's
``Invalid input.``); ``incompatible`` a value or array that does not fit the signature
(``INVALID_PARAMETER_VALUE``, starting with MLflow's ``Incompatible input types for ...``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import orjson

from gateway.errors import BadRequest, InvalidParameter
from gateway.serving.types import ColumnSpec


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


def type_label(spec: ColumnSpec, limit: int = 120) -> str:
    """A compact type name: ``long``, ``array<double>``, ``object{a: string, b?: long}``, ``map<string>``."""
    text = _type_label(spec)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _type_label(spec: ColumnSpec) -> str:
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
