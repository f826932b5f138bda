"""Trace summaries: one row per LLM call, written in batches by the trace sink, searched by ``/api/traces``.

Rows are keyed by (trace_id, span_id) of the request's SERVER span and inserted with "on conflict do
nothing", so a batch retried after a lost commit acknowledgement never duplicates a summary.
Search is newest first with keyset pagination: the page token is the sort key of the last row
returned, so pages stay stable while new summaries arrive. The assessment filters are an EXISTS
over the trace's assessments (gateway/store/assessments.py): a summary is listed once however many
of its trace's assessments match.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine, Row

from gateway.errors import InvalidParameter
from gateway.store.engine import begin_read, begin_write
from gateway.store.schema import assessments, trace_summaries

_ts, _as = trace_summaries, assessments
# Newest first; trace_id and span_id break ties so the order (and so the page token) is total.
_ORDER = (_ts.c.started_at.desc(), _ts.c.trace_id.desc(), _ts.c.span_id.desc())
COLUMNS: tuple[str, ...] = tuple(c.name for c in _ts.columns)
# Longest text each bounded column takes; the sink truncates to these so PostgreSQL never refuses a row.
COLUMN_LENGTHS: dict[str, int] = {
    c.name: int(c.type.length) for c in _ts.columns if isinstance(c.type, sa.String) and c.type.length
}

Status = Literal["ok", "error"] | int


@dataclasses.dataclass(frozen=True, slots=True)
class TraceFilters:
    """What ``search`` (and ``usage``) keeps. ``model`` matches the request or the response model; ``key_id`` the
    gateway key's id (``gateway.auth.key_id``); ``status`` is
    ``"ok"``, ``"error"`` (an error type or an HTTP status >= 400) or one HTTP status code;
    ``start_ms`` is inclusive and ``end_ms`` exclusive (epoch milliseconds).

    The assessment filters keep the summaries of traces holding one assessment that matches them all:
    named ``assessment_name`` (any name when None), whose ``label`` or JSON ``value`` text is
    ``assessment_value`` (``yes``, ``true``, ``"good"``...), with ``min_score <= score <= max_score``.
    """

    route: str | None = None
    model: str | None = None
    key_id: str | None = None
    status: Status | None = None
    prompt_name: str | None = None
    prompt_version: int | None = None
    start_ms: int | None = None
    end_ms: int | None = None
    assessment_name: str | None = None
    assessment_value: str | None = None
    min_score: float | None = None
    max_score: float | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class TracePage:
    summaries: list[dict[str, Any]]
    next_page_token: str | None


class TraceStore:
    """Trace-summary queries over the store's engine (SQLite or PostgreSQL); safe to share between threads."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        if engine.dialect.name == "postgresql":
            insert: Any = postgresql.insert(_ts)
        else:
            insert = sqlite.insert(_ts)
        self._insert = insert.on_conflict_do_nothing(index_elements=["trace_id", "span_id"])

    def insert_many(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """Insert summaries in one transaction (one executemany); rows already stored are skipped.

        Each row maps every column of ``trace_summaries`` (``attributes`` as JSON text). Returns
        the number of rows given.
        """
        if not rows:
            return 0
        with begin_write(self.engine) as conn:
            conn.execute(self._insert, [dict(row) for row in rows])
        return len(rows)

    def search(self, filters: TraceFilters, limit: int = 50, page_token: str | None = None) -> TracePage:
        """Summaries matching ``filters``, newest first, at most ``limit`` per page."""
        if limit < 1:
            raise InvalidParameter(f"limit must be a positive integer, got {limit}.")
        query = sa.select(_ts).where(*_conditions(filters)).order_by(*_ORDER).limit(limit + 1)
        if page_token:
            started_at, trace_id, span_id = _decode_token(page_token)
            query = query.where(
                sa.tuple_(_ts.c.started_at, _ts.c.trace_id, _ts.c.span_id) < (started_at, trace_id, span_id)
            )
        with begin_read(self.engine) as conn:
            rows = conn.execute(query).all()
        more = len(rows) > limit
        rows = rows[:limit]
        token = _encode_token(rows[-1]) if more else None
        return TracePage([summary_to_dict(row) for row in rows], token)

    def usage(
        self, filters: TraceFilters, group_by: UsageGroup | None = None
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Requests, tokens and cost of the summaries matching ``filters`` (the same rows ``search`` pages
        through, so the sums agree): per ``group_by`` value (``day``: UTC day of the call's start; ``key``; ``model``:
        the model the target was asked; ``route``), ordered by it, and in total."""
        aggregates = (
            sa.func.count().label("requests"),
            sa.func.coalesce(sa.func.sum(_ts.c.input_tokens), 0).label("input_tokens"),
            sa.func.coalesce(sa.func.sum(_ts.c.output_tokens), 0).label("output_tokens"),
            sa.func.coalesce(sa.func.sum(_ts.c.cost_usd), 0.0).label("cost_usd"),
        )
        conditions = _conditions(filters)
        with begin_read(self.engine) as conn:
            total = conn.execute(sa.select(*aggregates).where(*conditions)).one()
            groups: list[Row[Any]] = []
            if group_by is not None:
                column = _USAGE_GROUPS[group_by]
                query = sa.select(column.label("value"), *aggregates).where(*conditions).group_by(column)
                groups = list(conn.execute(query.order_by(column)))
        return (
            [{group_by: _group_value(group_by, row.value), **_usage(row)} for row in groups if group_by is not None],
            _usage(total),
        )

    def get(self, trace_id: str) -> list[dict[str, Any]]:
        """Every summary of one trace, oldest first (empty when the trace is unknown)."""
        query = sa.select(_ts).where(_ts.c.trace_id == trace_id.lower()).order_by(_ts.c.started_at, _ts.c.span_id)
        with begin_read(self.engine) as conn:
            return [summary_to_dict(row) for row in conn.execute(query)]

    def get_many(self, trace_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        """Every summary of each trace, by (lowercase) trace id, oldest first (one query; an unknown trace
        is absent)."""
        wanted = sorted({trace_id.lower() for trace_id in trace_ids})
        if not wanted:
            return {}
        query = sa.select(_ts).where(_ts.c.trace_id.in_(wanted)).order_by(_ts.c.started_at, _ts.c.span_id)
        found: dict[str, list[dict[str, Any]]] = {}
        with begin_read(self.engine) as conn:
            for row in conn.execute(query):
                found.setdefault(row.trace_id, []).append(summary_to_dict(row))
        return found


def _conditions(filters: TraceFilters) -> list[sa.ColumnElement[bool]]:
    conditions: list[sa.ColumnElement[bool]] = []
    if filters.route is not None:
        conditions.append(_ts.c.route == filters.route)
    if filters.model is not None:
        conditions.append(sa.or_(_ts.c.request_model == filters.model, _ts.c.response_model == filters.model))
    if filters.key_id is not None:
        conditions.append(_ts.c.key_id == filters.key_id)
    if filters.status is not None:
        ok = sa.and_(_ts.c.error_type.is_(None), sa.or_(_ts.c.status_code.is_(None), _ts.c.status_code < 400))
        if filters.status == "ok":
            conditions.append(ok)
        elif filters.status == "error":
            conditions.append(sa.not_(ok))
        else:
            conditions.append(_ts.c.status_code == filters.status)
    if filters.prompt_name is not None:
        conditions.append(_ts.c.prompt_name == filters.prompt_name)
    if filters.prompt_version is not None:
        conditions.append(_ts.c.prompt_version == filters.prompt_version)
    if filters.start_ms is not None:
        conditions.append(_ts.c.started_at >= filters.start_ms)
    if filters.end_ms is not None:
        conditions.append(_ts.c.started_at < filters.end_ms)
    assessed = _assessment_conditions(filters)
    if assessed:
        conditions.append(sa.exists().where(_as.c.trace_id == _ts.c.trace_id, *assessed))
    return conditions


def _assessment_conditions(filters: TraceFilters) -> list[sa.ColumnElement[bool]]:
    conditions: list[sa.ColumnElement[bool]] = []
    if filters.assessment_name is not None:
        conditions.append(_as.c.name == filters.assessment_name)
    if filters.assessment_value is not None:
        conditions.append(sa.or_(_as.c.label == filters.assessment_value, _as.c.value == filters.assessment_value))
    if filters.min_score is not None:
        conditions.append(_as.c.score >= filters.min_score)
    if filters.max_score is not None:
        conditions.append(_as.c.score <= filters.max_score)
    return conditions


UsageGroup = Literal["day", "key", "model", "route"]
USAGE_GROUPS: tuple[UsageGroup, ...] = ("day", "key", "model", "route")
_DAY_MS = 86_400_000
_USAGE_GROUPS: dict[str, sa.ColumnElement[Any]] = {
    "day": _ts.c.started_at // _DAY_MS,
    "key": _ts.c.key_id,
    "model": _ts.c.request_model,
    "route": _ts.c.route,
}


def _group_value(group_by: str, value: Any) -> Any:
    if group_by == "day":
        return dt.datetime.fromtimestamp(int(value) * _DAY_MS / 1000, dt.UTC).date().isoformat()
    return value


def _usage(row: Row[Any]) -> dict[str, Any]:
    input_tokens, output_tokens = int(row.input_tokens), int(row.output_tokens)
    return {
        "requests": int(row.requests), "input_tokens": input_tokens, "output_tokens": output_tokens,
        "total_tokens": input_tokens + output_tokens, "cost_usd": float(row.cost_usd),
    }  # fmt: skip


def summary_to_dict(row: Row[Any]) -> dict[str, Any]:
    """A stored row as the API shows it: JSON columns parsed, content as stored (JSON when it parses)."""
    data = dict(row._mapping)
    data["attributes"] = orjson.loads(data["attributes"]) if data["attributes"] else {}
    data["stream"] = bool(data["stream"])
    for column in ("input_content", "output_content"):
        if data[column] is not None:
            with contextlib.suppress(orjson.JSONDecodeError):  # truncated capture: shown as the text it is
                data[column] = orjson.loads(data[column])
    return data


def _encode_token(row: Row[Any]) -> str:
    key = orjson.dumps([row.started_at, row.trace_id, row.span_id])
    return base64.urlsafe_b64encode(key).decode("ascii").rstrip("=")


def _decode_token(token: str) -> tuple[int, str, str]:
    try:
        key = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        started_at, trace_id, span_id = key
        if not (isinstance(started_at, int) and isinstance(trace_id, str) and isinstance(span_id, str)):
            raise ValueError
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
        raise InvalidParameter(
            f"page_token {token[:64]!r} is not a token returned by this endpoint (use next_page_token)."
        ) from None
    return started_at, trace_id, span_id
