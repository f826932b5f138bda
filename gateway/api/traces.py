"""The trace store over HTTP: ``GET /api/traces`` (search, newest first), ``GET /api/traces/{trace_id}`` (its
summaries and assessments), ``POST /api/traces/{trace_id}/assessments`` (human feedback) and ``GET /api/usage``
(requests, tokens and cost summed over the same summaries, per day, key, model or route).

Human feedback is an assessment like a judge's (gateway/store/assessments.py), with source ``HUMAN`` and an id
made from the target, the name and ``"human:" + source_id``: the same person labelling the same call again
replaces their label, another person adds one. Without a ``span_id``, feedback on a trace holding one LLM call
targets that call's span (where a judge's verdict on it lands, so the two pair up for agreement figures).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import re
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import Response

from gateway.api.feedback import parse_feedback
from gateway.errors import BadRequest, DependencyError, InvalidParameter, NotFound
from gateway.http import ORJSONResponse, read_json_object
from gateway.store.assessments import (
    HUMAN,
    Assessment,
    AssessmentStore,
    assessment_id,
    score_and_label,
    trace_target,
)
from gateway.store.keys import KeyStore
from gateway.store.traces import USAGE_GROUPS, Status, TraceFilters, TraceStore

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
MAX_INT64 = 2**63 - 1
MAX_EPOCH_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z, the last moment an ISO 8601 time can name
_QUERY_PARAMS = (
    "route", "model", "key", "status", "prompt_name", "prompt_version", "from", "to",
    "assessment", "assessment_value", "min_score", "max_score", "limit", "page_token",
)  # fmt: skip
_USAGE_PARAMS = ("key", "route", "model", "from", "to", "group_by")
_TRACE_ID = re.compile(r"[0-9a-fA-F]{32}")
_SPAN_ID = re.compile(r"[0-9a-fA-F]{16}")
T = TypeVar("T")


def _store(request: Request) -> TraceStore:
    traces: TraceStore = request.app.state.telemetry.traces
    return traces


def _assessments(request: Request) -> AssessmentStore:
    assessments: AssessmentStore = request.app.state.assessments
    return assessments


async def _query(call: Callable[[], T]) -> T:
    try:
        return await asyncio.to_thread(call)
    except SQLAlchemyError as exc:
        raise DependencyError(f"The trace store is unavailable ({type(exc).__name__}); retry later.") from exc


async def search_traces(request: Request) -> Response:
    """Filters: route, model (request or response model), status (ok | error | an HTTP code),
    prompt_name, prompt_version, from / to (epoch ms or ISO 8601; from inclusive, to exclusive);
    assessment (a name), assessment_value (a label or JSON value), min_score / max_score (inclusive):
    one assessment of the trace must match them all; pagination: limit (1-1000, default 50) and the
    opaque page_token of the previous page."""
    params = request.query_params
    unknown = sorted(set(params) - set(_QUERY_PARAMS))
    if unknown:
        raise InvalidParameter(f"Unknown query parameter(s) {', '.join(unknown)}; known: {', '.join(_QUERY_PARAMS)}.")
    prompt_version = _int_param(params.get("prompt_version"), "prompt_version", minimum=1)
    filters = TraceFilters(
        route=_text(params.get("route"), "route"),
        model=_text(params.get("model"), "model"),
        key_id=await _key_id(request, params.get("key")),
        status=_status(params.get("status")),
        prompt_name=_text(params.get("prompt_name"), "prompt_name"),
        prompt_version=prompt_version,
        start_ms=_time(params.get("from"), "from"),
        end_ms=_time(params.get("to"), "to"),
        assessment_name=_text(params.get("assessment"), "assessment"),
        assessment_value=_text(params.get("assessment_value"), "assessment_value"),
        min_score=_float_param(params.get("min_score"), "min_score"),
        max_score=_float_param(params.get("max_score"), "max_score"),
    )
    limit = _int_param(params.get("limit"), "limit", minimum=1, maximum=MAX_LIMIT) or DEFAULT_LIMIT
    token = params.get("page_token") or None
    store = _store(request)
    page = await _query(lambda: store.search(filters, limit, token))
    return ORJSONResponse({"traces": page.summaries, "next_page_token": page.next_page_token})


async def usage(request: Request) -> Response:
    """Requests, tokens (input, output, total) and cost of the LLM calls matching key (a key id or name), route,
    model, from / to (as ``/api/traces``: its sums over the same filter are these), per ``group_by`` (day, key,
    model, route; none: the total only) and in total."""
    params = request.query_params
    unknown = sorted(set(params) - set(_USAGE_PARAMS))
    if unknown:
        raise InvalidParameter(f"Unknown query parameter(s) {', '.join(unknown)}; known: {', '.join(_USAGE_PARAMS)}.")
    group_by = params.get("group_by") or None
    if group_by is not None and group_by not in USAGE_GROUPS:
        raise InvalidParameter(f"group_by must be one of {', '.join(USAGE_GROUPS)}, got {_shown(group_by)}.")
    filters = TraceFilters(
        route=_text(params.get("route"), "route"),
        model=_text(params.get("model"), "model"),
        key_id=await _key_id(request, params.get("key")),
        start_ms=_time(params.get("from"), "from"),
        end_ms=_time(params.get("to"), "to"),
    )
    store = _store(request)
    groups, total = await _query(lambda: store.usage(filters, group_by))
    return ORJSONResponse({"group_by": group_by, "groups": groups, "total": total})


async def _key_id(request: Request, text: str | None) -> str | None:
    """The ``key`` filter: a key's id, or the name of a key in the store (answered as its id)."""
    key = _text(text, "key")
    if key is None or len(key) > 255:
        return key
    keys: KeyStore | None = getattr(request.app.state, "key_store", None)
    if keys is None:
        return key
    try:
        return (await _query(lambda: keys.get(key))).id
    except NotFound:
        return key  # a bootstrap key's id, or one no call used


async def get_trace(request: Request) -> Response:
    """The trace's summaries (oldest first) and its assessments (oldest first); 404 without summaries."""
    trace_id = _trace_id(request)
    store, assessments = _store(request), _assessments(request)
    summaries, assessed = await _query(lambda: (store.get(trace_id), assessments.for_trace(trace_id)))
    if not summaries:
        raise NotFound(f"No trace summaries for trace {trace_id}.")
    return ORJSONResponse(
        {"trace_id": trace_id, "summaries": summaries, "assessments": [a.to_dict() for a in assessed]}
    )


async def record_feedback(request: Request) -> Response:
    """Human feedback on a trace: ``{"name", "value", "rationale"?, "source_id"?, "span_id"?, "metadata"?}``;
    201 with the stored assessment (the same source_id's earlier label of that target replaced)."""
    trace_id = _trace_id(request)
    feedback = parse_feedback(await read_json_object(request))
    span_id = feedback.span_id
    if span_id is not None and not _SPAN_ID.fullmatch(span_id):
        raise BadRequest(f"Field 'span_id' must be 16 hexadecimal characters, got {_shown(span_id)}.")
    store, assessments = _store(request), _assessments(request)
    summaries = await _query(lambda: store.get(trace_id))
    if not summaries:
        raise NotFound(f"No trace summaries for trace {trace_id}: feedback is given on a stored trace.")
    spans = [summary["span_id"] for summary in summaries]
    if span_id is None and len(spans) == 1:
        span_id = spans[0]
    elif span_id is not None and span_id.lower() not in spans:
        raise BadRequest(
            f"Field 'span_id': trace {trace_id} has no LLM call with span id {span_id.lower()}; "
            f"its calls' span ids: {', '.join(spans)}."
        )
    span_id = span_id.lower() if span_id is not None else None
    score, label = score_and_label(feedback.value)
    assessment = Assessment(
        id=assessment_id(
            target=trace_target(trace_id, span_id), judge_name=feedback.name,
            judge_version=f"human:{feedback.source_id or ''}", evaluation_id=None,
        ),
        trace_id=trace_id, span_id=span_id, name=feedback.name, source_type=HUMAN, source_id=feedback.source_id,
        value=feedback.value, score=score, label=label, rationale=feedback.rationale, metadata=feedback.metadata,
    )  # fmt: skip
    stored = await _query(lambda: assessments.upsert_human(assessment))
    return ORJSONResponse(stored.to_dict(), status_code=201)


def _trace_id(request: Request) -> str:
    trace_id: str = request.path_params["trace_id"]
    if not _TRACE_ID.fullmatch(trace_id):
        raise InvalidParameter(f"trace_id {_shown(trace_id)} is not a trace id: expected 32 hexadecimal characters.")
    return trace_id.lower()


def _int_param(text: str | None, name: str, *, minimum: int, maximum: int = MAX_INT64) -> int | None:
    if text is None or text == "":
        return None
    digits = text.strip().lstrip("-")
    if not (digits.isascii() and digits.isdigit()):
        raise InvalidParameter(f"{name} must be an integer, got {_shown(text)}.")
    value = int(text) if len(digits) <= 20 else maximum + 1  # more digits than any bound (and than int() reads)
    if not minimum <= value <= maximum:
        raise InvalidParameter(f"{name} must be an integer between {minimum} and {maximum}, got {_shown(text)}.")
    return value


def _text(text: str | None, name: str) -> str | None:
    """A text filter (None when empty); a NUL is refused (PostgreSQL takes no NUL in text)."""
    if not text:
        return None
    if "\x00" in text:
        raise InvalidParameter(f"{name} must not contain NUL characters.")
    return text


def _float_param(text: str | None, name: str) -> float | None:
    if text is None or text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        raise InvalidParameter(f"{name} must be a number, got {_shown(text)}.") from None
    if not math.isfinite(value):
        raise InvalidParameter(f"{name} must be a finite number, got {_shown(text)}.")
    return value


def _shown(text: str, limit: int = 40) -> str:
    return repr(text) if len(text) <= limit else repr(text[: limit - 3] + "...")


def _status(text: str | None) -> Status | None:
    if text is None or text == "":
        return None
    lowered = text.strip().lower()
    if lowered in ("ok", "error"):
        return "ok" if lowered == "ok" else "error"
    if lowered.isascii() and lowered.isdigit() and 100 <= int(lowered) <= 599:
        return int(lowered)
    raise InvalidParameter(f"status must be ok, error or an HTTP status code (100-599), got {text!r}.")


def _time(text: str | None, name: str) -> int | None:
    """Epoch milliseconds from epoch milliseconds or ISO 8601 (a time without a zone is UTC)."""
    if text is None or text == "":
        return None
    stripped = text.strip()
    if stripped.isascii() and stripped.isdigit():
        if len(stripped) > len(str(MAX_EPOCH_MS)) or int(stripped) > MAX_EPOCH_MS:
            raise InvalidParameter(
                f"{name} must be epoch milliseconds up to {MAX_EPOCH_MS} (the end of year 9999), got {_shown(text)}."
            )
        return int(stripped)
    if "T" in stripped and " " in stripped:
        stripped = stripped.replace(" ", "+")  # an unescaped "+02:00" arrives as " 02:00"
    try:
        moment = dt.datetime.fromisoformat(stripped.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise InvalidParameter(
            f"{name} must be epoch milliseconds or an ISO 8601 time (2026-01-31T12:00:00Z), got {_shown(text)}."
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp() * 1000)
