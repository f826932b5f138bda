"""Fields of JSON request bodies that several admin APIs share, each read by one rule.

Errors are ``BadRequest`` (400) naming the field, so every endpoint that takes the field answers a
bad value the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.error_text import json_type
from gateway.errors import BadRequest

_TAGS_SHAPE = 'an object or a list of {"key", "value"} objects'


def tags_field(body: Mapping[str, Any], field: str = "tags") -> dict[str, str] | None:
    """``body[field]`` as tags: an object mapping non-empty strings to strings, or MLflow's
    ``[{"key": k, "value": v}, ...]`` form of it. None when the field is absent or null."""
    tags = body.get(field)
    if tags is None:
        return None
    if isinstance(tags, list):  # MLflow's [{"key": k, "value": v}] form
        try:
            tags = {item["key"]: item["value"] for item in tags}
        except (TypeError, KeyError):
            raise BadRequest(f"Field {field!r} must be {_TAGS_SHAPE}.") from None
    if not isinstance(tags, dict):
        raise BadRequest(f"Field {field!r} must be {_TAGS_SHAPE}, got {json_type(tags)}.")
    for key, value in tags.items():
        if not isinstance(key, str) or not key or not isinstance(value, str):
            raise BadRequest(f"Field {field!r}: tag {key!r} must have a non-empty string key and a string value.")
    return tags
