"""Human feedback bodies, one set of rules wherever a person labels something: a trace
(``POST /api/traces/{trace_id}/assessments``) or an evaluation run's item
(``POST /api/evaluations/{id}/items/{index}/assessments``)."""

from __future__ import annotations

import dataclasses
from typing import Any

from gateway.error_text import json_type
from gateway.errors import BadRequest
from gateway.store.assessments import COLUMN_LENGTHS

FEEDBACK_FIELDS = ("name", "value", "rationale", "source_id", "span_id", "metadata")


@dataclasses.dataclass(frozen=True, slots=True)
class Feedback:
    """A validated feedback body: what is assessed (``name``), the person's value and the rest."""

    name: str
    value: bool | float | int | str
    rationale: str | None
    source_id: str | None
    span_id: str | None  # as given (the caller checks it against what is labelled)
    metadata: dict[str, Any]


def parse_feedback(body: dict[str, Any]) -> Feedback:
    """``{"name", "value", "rationale"?, "source_id"?, "span_id"?, "metadata"?}``, or a 400 naming the field."""
    unknown = sorted(set(body) - set(FEEDBACK_FIELDS))
    if unknown:
        raise BadRequest(f"Unknown field(s) {', '.join(unknown)}; feedback has {', '.join(FEEDBACK_FIELDS)}.")
    name = _text(body, "name")
    if name is None:
        raise BadRequest("Field 'name' is required: what is assessed (a judge's name, to compare with its verdicts).")
    value = _value(body)
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise BadRequest(f"Field 'metadata' must be an object, got {json_type(metadata)}.")
    return Feedback(
        name, value, _text(body, "rationale"), _text(body, "source_id"), _text(body, "span_id"), metadata or {}
    )


def _text(body: dict[str, Any], field: str) -> str | None:
    """A string field (None when absent or null): non-empty, without NUL, within its column when it has one."""
    text = body.get(field)
    if text is None:
        return None
    if not isinstance(text, str):
        raise BadRequest(f"Field {field!r} must be a string, got {json_type(text)}.")
    if not text or "\x00" in text:
        raise BadRequest(f"Field {field!r} must be a non-empty string without NUL characters.")
    limit = COLUMN_LENGTHS.get(field)
    if limit is not None and len(text) > limit:
        raise BadRequest(f"Field {field!r} must be at most {limit} characters, got {len(text)}.")
    return text


def _value(body: dict[str, Any]) -> bool | float | int | str:
    value = body.get("value")
    if isinstance(value, bool | int | float):
        return value  # orjson never gives a non-finite number
    if isinstance(value, str):
        if not value or "\x00" in value:
            raise BadRequest("Field 'value' must be a non-empty string without NUL characters, a number or a boolean.")
        return value
    what = "is required" if "value" not in body else f"got {json_type(value)}"
    raise BadRequest(f"Field 'value' must be a boolean, a number or a string (a label): {what}.")
