"""What ``POST /api/evaluations`` accepts: the body read field by field into an :class:`EvaluationRequest`.

Every refusal is a 400 naming the field (``judges[1].guidelines``, ``items[3].outputs``,
``traces.prompt_version``) and what was wrong, before anything is stored or called. This module only
reads the body; what needs the gateway's state (the judges in the registry, the configured routes, the
prompt a target names, the stored traces) is checked when the run is planned (judges/evaluations.py).

The body::

    {"judges": ["relevance_to_query", {"name": "guidelines", "guidelines": "Answer in English."}],
     # exactly one of:
     "items": [{"inputs": ..., "outputs": ..., "expectations": {...}}, ...],
     "trace_ids": ["<32 hex>", ...],
     "traces": {"route": "chat", "prompt_name": "qa", "prompt_version": 3,
                "from": <epoch ms or ISO 8601>, "to": ..., "limit": 200},
     # optional:
     "target": {"route": "chat", "prompt": "prompts:/qa@production"},  # generates missing outputs
     "dry_run": false,
     "name": "qa v3 vs expectations"}
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from gateway.error_text import json_type
from gateway.errors import BadRequest

MAX_JUDGES: Final = 20
MAX_ITEMS: Final = 50_000
MAX_NAME_LENGTH: Final = 255
MAX_EPOCH_MS: Final = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
SOURCES: Final = ("items", "trace_ids", "traces")
_TOP_FIELDS: Final = frozenset({*SOURCES, "judges", "target", "dry_run", "name"})
_ITEM_FIELDS: Final = frozenset({"inputs", "outputs", "expectations"})
_JUDGE_FIELDS: Final = frozenset({"name", "guidelines"})
_TARGET_FIELDS: Final = frozenset({"route", "prompt"})
_TRACE_FIELDS: Final = frozenset({"route", "prompt_name", "prompt_version", "from", "to", "limit"})
_TRACE_ID: Final = re.compile(r"[0-9a-fA-F]{32}")


@dataclass(frozen=True, slots=True)
class JudgeSpec:
    """A judge as the request names it; ``guidelines`` (a string, one a line, or a list of strings) only for
    the judges that take them (judges/catalog.py checks them)."""

    name: str
    guidelines: str | list[str] | None = None


@dataclass(frozen=True, slots=True)
class TargetSpec:
    """Where missing outputs come from: a chat call through ``route``, with ``prompt`` (a reference into
    the prompt registry, rendered with each item's inputs as its variables) when given."""

    route: str
    prompt: str | None = None


@dataclass(frozen=True, slots=True)
class TraceQuery:
    """The stored LLM calls to judge, newest first; ``limit`` is the caller's cap (the server's applies too)."""

    route: str | None = None
    prompt_name: str | None = None
    prompt_version: int | None = None
    start_ms: int | None = None
    end_ms: int | None = None
    limit: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "route": self.route,
            "prompt_name": self.prompt_name,
            "prompt_version": self.prompt_version,
            "from": self.start_ms,
            "to": self.end_ms,
            "limit": self.limit,
        }


@dataclass(frozen=True, slots=True)
class EvaluationRequest:
    judges: tuple[JudgeSpec, ...]
    items: tuple[dict[str, Any], ...] | None = None
    trace_ids: tuple[str, ...] | None = None
    traces: TraceQuery | None = None
    target: TargetSpec | None = None
    dry_run: bool = False
    name: str | None = None

    @property
    def source(self) -> str:
        return "items" if self.items is not None else "trace_ids" if self.trace_ids is not None else "traces"


def parse_request(body: Mapping[str, Any]) -> EvaluationRequest:
    """The request in ``body`` (a decoded JSON object), or BadRequest naming the first field that is wrong."""
    unknown = sorted(set(body) - _TOP_FIELDS)
    if unknown:
        raise BadRequest(f"Unknown field(s) {', '.join(map(repr, unknown))}; known: {', '.join(sorted(_TOP_FIELDS))}.")
    given = [name for name in SOURCES if body.get(name) is not None]
    if len(given) != 1:
        what = "none" if not given else " and ".join(map(repr, given))
        raise BadRequest(f"Give exactly one of 'items', 'trace_ids' or 'traces' (what to evaluate); got {what}.")
    target = _target(body.get("target"))
    items = _items(body["items"], has_target=target is not None) if "items" in given else None
    return EvaluationRequest(
        judges=_judges(body.get("judges")),
        items=items,
        trace_ids=_trace_ids(body["trace_ids"]) if "trace_ids" in given else None,
        traces=_trace_query(body["traces"]) if "traces" in given else None,
        target=target,
        dry_run=_boolean(body.get("dry_run", False), "dry_run"),
        name=_optional_text(body.get("name"), "name"),
    )


def _judges(value: Any) -> tuple[JudgeSpec, ...]:
    if not isinstance(value, list) or not value:
        raise BadRequest(
            "Field 'judges' must be a non-empty list of judge names or objects like "
            f'{{"name": "guidelines", "guidelines": "..."}}, got {_shown_type(value)}.'
        )
    if len(value) > MAX_JUDGES:
        raise BadRequest(f"Field 'judges' lists {len(value)} judges; at most {MAX_JUDGES} per evaluation.")
    specs: list[JudgeSpec] = []
    for index, entry in enumerate(value):
        where = f"judges[{index}]"
        if isinstance(entry, str):
            spec = JudgeSpec(_name(entry, where))
        elif isinstance(entry, dict):
            unknown = sorted(set(entry) - _JUDGE_FIELDS)
            if unknown:
                raise BadRequest(
                    f"{where} has unknown field(s) {', '.join(map(repr, unknown))}; known: guidelines, name."
                )
            guidelines = entry.get("guidelines")
            if guidelines is not None and not isinstance(guidelines, str | list):
                raise BadRequest(f"{where}.guidelines must be a string (one guideline a line) or a list of strings, "
                                 f"got {json_type(guidelines)}.")  # fmt: skip
            spec = JudgeSpec(_name(entry.get("name"), f"{where}.name"), guidelines)
        else:
            raise BadRequest(f"{where} must be a judge name or an object with 'name', got {json_type(entry)}.")
        if any(earlier.name == spec.name for earlier in specs):
            raise BadRequest(
                f"{where}: judge {spec.name!r} is listed twice (each judge gives one assessment per item)."
            )
        specs.append(spec)
    return tuple(specs)


def _items(value: Any, *, has_target: bool) -> tuple[dict[str, Any], ...]:
    if not isinstance(value, list) or not value:
        raise BadRequest(
            "Field 'items' must be a non-empty list of {inputs, outputs?, expectations?} objects, "
            f"got {_shown_type(value)}."
        )
    if len(value) > MAX_ITEMS:
        raise BadRequest(f"Field 'items' has {len(value)} items; at most {MAX_ITEMS} per evaluation.")
    items: list[dict[str, Any]] = []
    for index, item in enumerate(value):
        where = f"items[{index}]"
        if not isinstance(item, dict):
            raise BadRequest(
                f"{where} must be an object with 'inputs' (and 'outputs', 'expectations'), got {json_type(item)}."
            )
        unknown = sorted(set(item) - _ITEM_FIELDS)
        if unknown:
            raise BadRequest(
                f"{where} has unknown field(s) {', '.join(map(repr, unknown))}; known: expectations, inputs, outputs."
            )
        if item.get("inputs") is None:
            raise BadRequest(f"{where}.inputs is required (the question or request the outputs answer).")
        expectations = item.get("expectations")
        if expectations is not None and not isinstance(expectations, dict):
            raise BadRequest(
                f"{where}.expectations must be an object (expected_response, expected_facts, context...), "
                f"got {json_type(expectations)}."
            )
        if item.get("outputs") is None and not has_target:
            raise BadRequest(
                f"{where} has no outputs: give them, or a 'target' (a route, and a prompt) to generate them."
            )
        items.append({"inputs": item["inputs"], "outputs": item.get("outputs"), "expectations": expectations})
    return tuple(items)


def _trace_ids(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise BadRequest(
            f"Field 'trace_ids' must be a non-empty list of trace ids (32 hex digits), got {_shown_type(value)}."
        )
    seen: dict[str, None] = {}
    for index, trace_id in enumerate(value):
        if not isinstance(trace_id, str) or not _TRACE_ID.fullmatch(trace_id):
            raise BadRequest(f"trace_ids[{index}] is not a trace id (32 hexadecimal digits): {_shown(trace_id)}.")
        seen.setdefault(trace_id.lower(), None)
    if len(seen) > MAX_ITEMS:
        raise BadRequest(f"Field 'trace_ids' has {len(seen)} trace ids; at most {MAX_ITEMS} per evaluation.")
    return tuple(seen)


def _trace_query(value: Any) -> TraceQuery:
    if not isinstance(value, dict):
        raise BadRequest(
            f"Field 'traces' must be an object (a filter: {', '.join(sorted(_TRACE_FIELDS))}), got {json_type(value)}."
        )
    unknown = sorted(set(value) - _TRACE_FIELDS)
    if unknown:
        raise BadRequest(
            f"traces has unknown field(s) {', '.join(map(repr, unknown))}; known: {', '.join(sorted(_TRACE_FIELDS))}."
        )
    query = TraceQuery(
        route=_optional_text(value.get("route"), "traces.route"),
        prompt_name=_optional_text(value.get("prompt_name"), "traces.prompt_name"),
        prompt_version=_positive_int(value.get("prompt_version"), "traces.prompt_version"),
        start_ms=_time(value.get("from"), "traces.from"),
        end_ms=_time(value.get("to"), "traces.to"),
        limit=_positive_int(value.get("limit"), "traces.limit"),
    )
    if query.start_ms is not None and query.end_ms is not None and query.end_ms <= query.start_ms:
        raise BadRequest(f"traces.to ({query.end_ms}) must be after traces.from ({query.start_ms}).")
    return query


def _target(value: Any) -> TargetSpec | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise BadRequest(
            'Field \'target\' must be an object like {"route": "chat", "prompt": "prompts:/qa@production"}, '
            f"got {json_type(value)}."
        )
    unknown = sorted(set(value) - _TARGET_FIELDS)
    if unknown:
        raise BadRequest(f"target has unknown field(s) {', '.join(map(repr, unknown))}; known: prompt, route.")
    route = _name(value.get("route"), "target.route")
    return TargetSpec(route, _optional_text(value.get("prompt"), "target.prompt"))


# -- values ---------------------------------------------------------------------------------------------


def _name(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"{field} must be a non-empty string, got {_shown_type(value)}.")
    if len(value) > MAX_NAME_LENGTH:
        raise BadRequest(f"{field} is {len(value)} characters long; at most {MAX_NAME_LENGTH}.")
    return value.strip()


def _optional_text(value: Any, field: str, *, limit: int | None = MAX_NAME_LENGTH) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"{field} must be a non-empty string when given, got {_shown_type(value)}.")
    if limit is not None and len(value) > limit:
        raise BadRequest(f"{field} is {len(value)} characters long; at most {limit}.")
    return value.strip()


def _boolean(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise BadRequest(f"{field} must be true or false, got {_shown_type(value)}.")
    return value


def _positive_int(value: Any, field: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 2**31 - 1:
        raise BadRequest(f"{field} must be a whole number from 1 to {2**31 - 1}, got {_shown(value)}.")
    return value


def _time(value: Any, field: str) -> int | None:
    """Epoch milliseconds from a JSON number of epoch ms or an ISO 8601 string (no zone: UTC)."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value <= MAX_EPOCH_MS:
            raise BadRequest(f"{field} must be epoch milliseconds from 0 to {MAX_EPOCH_MS}, got {_shown(value)}.")
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            pass
        else:
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=dt.UTC)
            return int(moment.timestamp() * 1000)
    raise BadRequest(
        f"{field} must be epoch milliseconds or an ISO 8601 time (2026-01-31T12:00:00Z), got {_shown(value)}."
    )


def _shown(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _shown_type(value: Any) -> str:
    return "nothing" if value is None else json_type(value)
