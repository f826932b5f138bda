"""The trace store over HTTP: ``GET /api/traces`` (search, newest first) and ``GET /api/traces/{trace_id}``."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import DependencyError, InvalidParameter, NotFound
from gateway.http import ORJSONResponse
from gateway.store.traces import Status, TraceFilters, TraceStore

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
MAX_INT64 = 2**63 - 1
MAX_EPOCH_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z, the last moment an ISO 8601 time can name
_QUERY_PARAMS = ("route", "model", "status", "prompt_name", "prompt_version", "from", "to", "limit", "page_token")
_TRACE_ID = re.compile(r"[0-9a-fA-F]{32}")
T = TypeVar("T")


def _store(request: Request) -> TraceStore:
    traces: TraceStore = request.app.state.telemetry.traces
    return traces


async def _query(call: Callable[[], T]) -> T:
    try:
        return await asyncio.to_thread(call)
    except SQLAlchemyError as exc:
        raise DependencyError(f"The trace store is unavailable ({type(exc).__name__}); retry later.") from exc


async def search_traces(request: Request) -> Response:
    """Filters: route, model (request or response model), status (ok | error | an HTTP code),
    prompt_name, prompt_version, from / to (epoch ms or ISO 8601; from inclusive, to exclusive);
    pagination: limit (1-1000, default 50) and the opaque page_token of the previous page."""
    params = request.query_params
    unknown = sorted(set(params) - set(_QUERY_PARAMS))
    if unknown:
        raise InvalidParameter(f"Unknown query parameter(s) {', '.join(unknown)}; known: {', '.join(_QUERY_PARAMS)}.")
    prompt_version = _int_param(params.get("prompt_version"), "prompt_version", minimum=1)
    filters = TraceFilters(
        route=params.get("route") or None,
        model=params.get("model") or None,
        status=_status(params.get("status")),
        prompt_name=params.get("prompt_name") or None,
        prompt_version=prompt_version,
        start_ms=_time(params.get("from"), "from"),
        end_ms=_time(params.get("to"), "to"),
    )
    limit = _int_param(params.get("limit"), "limit", minimum=1, maximum=MAX_LIMIT) or DEFAULT_LIMIT
    token = params.get("page_token") or None
    store = _store(request)
    page = await _query(lambda: store.search(filters, limit, token))
    return ORJSONResponse({"traces": page.summaries, "next_page_token": page.next_page_token})


async def get_trace(request: Request) -> Response:
    trace_id: str = request.path_params["trace_id"]
    if not _TRACE_ID.fullmatch(trace_id):
        raise InvalidParameter(f"trace_id {trace_id!r} is not a trace id: expected 32 hexadecimal characters.")
    store = _store(request)
    summaries = await _query(lambda: store.get(trace_id))
    if not summaries:
        raise NotFound(f"No trace summaries for trace {trace_id.lower()}.")
    return ORJSONResponse({"trace_id": trace_id.lower(), "summaries": summaries})


def _int_param(text: str | None, name: str, *, minimum: int, maximum: int = MAX_INT64) -> int | None:
    if text is None or text == "":
        return None
    digits = text.strip().lstrip("-")
    if not digits.isdigit():
        raise InvalidParameter(f"{name} must be an integer, got {_shown(text)}.")
    value = int(text) if len(digits) <= 20 else maximum + 1  # more digits than any bound (and than int() reads)
    if not minimum <= value <= maximum:
        raise InvalidParameter(f"{name} must be an integer between {minimum} and {maximum}, got {_shown(text)}.")
    return value


def _shown(text: str, limit: int = 40) -> str:
    return repr(text) if len(text) <= limit else repr(text[: limit - 3] + "...")


def _status(text: str | None) -> Status | None:
    if text is None or text == "":
        return None
    lowered = text.strip().lower()
    if lowered in ("ok", "error"):
        return "ok" if lowered == "ok" else "error"
    if lowered.isdigit() and 100 <= int(lowered) <= 599:
        return int(lowered)
    raise InvalidParameter(f"status must be ok, error or an HTTP status code (100-599), got {text!r}.")


def _time(text: str | None, name: str) -> int | None:
    """Epoch milliseconds from epoch milliseconds or ISO 8601 (a time without a zone is UTC)."""
    if text is None or text == "":
        return None
    stripped = text.strip()
    if stripped.isdigit():
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
