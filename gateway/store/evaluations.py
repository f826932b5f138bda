"""Evaluation runs: one ``evaluations`` row per run (its request, status and times) and one
``evaluation_items`` row per item (what is judged, and where the judged outputs came from).

A run is created with all its items in one transaction (``queued``), then moves through ``running`` to
``completed``, ``cancelled`` or ``failed`` (:meth:`EvaluationStore.set_status` stamps ``started_at`` and
``finished_at``). Items start ``pending``, become ``queued`` once their judge jobs are on the judge queue
(judges/evaluation_feed.py) and end ``done`` or ``error``; their verdicts are assessments
(gateway/store/assessments.py) keyed by ``(evaluation_id, item_index)``. Listing is newest first with
keyset pagination, as the trace search (gateway/store/traces.py).
"""

from __future__ import annotations

import base64
import binascii
import builtins
from collections.abc import Mapping, Sequence
from typing import Any, Final

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Engine, Row

from gateway.errors import InvalidParameter, NotFound
from gateway.store.assessments import now_ms
from gateway.store.engine import begin_read, begin_write
from gateway.store.schema import evaluation_items, evaluations

_ev, _it = evaluations, evaluation_items

STATUSES: Final = ("queued", "running", "completed", "cancelled", "failed")
FINISHED: Final = frozenset({"completed", "cancelled", "failed"})
ITEM_STATUSES: Final = ("pending", "queued", "done", "error")
# Item fields: what create() reads of each item and what update_item() may change; the first three are JSON.
_JSON_FIELDS: Final = ("inputs", "outputs", "expectations")
_ITEM_FIELDS: Final = (*_JSON_FIELDS, "trace_id", "span_id", "prompt_name", "prompt_version", "model")
_UPDATABLE: Final = frozenset({*_ITEM_FIELDS, "status", "error_message"})
_ORDER = (_ev.c.created_at.desc(), _ev.c.id.desc())


class EvaluationStore:
    """Evaluation runs and their items over the store's engine (SQLite or PostgreSQL); safe to share between threads."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(
        self,
        evaluation_id: str,
        request: Mapping[str, Any],
        items: Sequence[Mapping[str, Any]],
        judge_count: int,
        *,
        owner: str | None = None,
    ) -> None:
        """Store a ``queued`` run and its items (numbered from 0 in the order given), in one transaction;
        ``owner``: the process that creates it holds its lease from the insert (heartbeat now), else (None)
        any process may take it (gateway/store/evaluation_runs.py).

        Each item maps ``inputs`` and optionally ``outputs``, ``expectations`` (any JSON), ``trace_id``,
        ``span_id``, ``prompt_name``, ``prompt_version``, ``model``; another key is a ValueError.
        """
        rows = []
        for index, item in enumerate(items):
            unknown = sorted(set(item) - set(_ITEM_FIELDS))
            if unknown:
                raise ValueError(f"evaluation item {index} has unknown field(s) {', '.join(unknown)}")
            row: dict[str, Any] = {"evaluation_id": evaluation_id, "item_index": index, "status": "pending"}
            row.update({name: item.get(name) for name in _ITEM_FIELDS})
            rows.append(_encode(row))
        created_at = now_ms()
        run = {
            "id": evaluation_id,
            "status": "queued",
            "request": orjson.dumps(dict(request)).decode(),
            "item_count": len(rows),
            "judge_count": judge_count,
            "created_at": created_at,
            "owner": owner,
            "heartbeat_at": None if owner is None else created_at,
        }
        with begin_write(self.engine) as conn:
            conn.execute(_ev.insert().values(run))
            if rows:
                conn.execute(_it.insert(), rows)

    def get(self, evaluation_id: str) -> dict[str, Any] | None:
        """The run's row (``request`` decoded), or None when there is no such run."""
        with begin_read(self.engine) as conn:
            row = conn.execute(sa.select(_ev).where(_ev.c.id == evaluation_id)).first()
        return None if row is None else _run(row)

    def list(self, limit: int = 50, page_token: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
        """Runs newest first, at most ``limit``, and the token of the next page (None on the last)."""
        if limit < 1:
            raise InvalidParameter(f"limit must be a positive integer, got {limit}.")
        query = sa.select(_ev).order_by(*_ORDER).limit(limit + 1)
        if page_token:
            created_at, run_id = _decode_token(page_token)
            query = query.where(sa.tuple_(_ev.c.created_at, _ev.c.id) < (created_at, run_id))
        with begin_read(self.engine) as conn:
            rows = conn.execute(query).all()
        more = len(rows) > limit
        rows = rows[:limit]
        token = _encode_token(rows[-1]) if more else None
        return [_run(row) for row in rows], token

    def items(self, evaluation_id: str) -> builtins.list[dict[str, Any]]:
        """The run's items by index, JSON fields decoded (empty for an unknown run)."""
        query = sa.select(_it).where(_it.c.evaluation_id == evaluation_id).order_by(_it.c.item_index)
        with begin_read(self.engine) as conn:
            return [_decode(dict(row._mapping)) for row in conn.execute(query)]

    def item(self, evaluation_id: str, item_index: int) -> dict[str, Any] | None:
        """One item of the run, JSON fields decoded; None when there is no such item (a queued job reads it)."""
        query = sa.select(_it).where(_it.c.evaluation_id == evaluation_id, _it.c.item_index == item_index)
        with begin_read(self.engine) as conn:
            row = conn.execute(query).first()
        return None if row is None else _decode(dict(row._mapping))

    def item_counts(self, evaluation_id: str) -> dict[str, int]:
        """How many of the run's items are in each item status (every status present, 0 when none)."""
        query = (
            sa.select(_it.c.status, sa.func.count()).where(_it.c.evaluation_id == evaluation_id).group_by(_it.c.status)
        )
        counts = dict.fromkeys(ITEM_STATUSES, 0)
        with begin_read(self.engine) as conn:
            for status, count in conn.execute(query):
                counts[status] = int(count)
        return counts

    def set_status(self, evaluation_id: str, status: str, *, error_message: str | None = None) -> None:
        """Set the run's status: ``running`` stamps ``started_at``, a finished status ``finished_at``.
        NotFound for an unknown run."""
        if status not in STATUSES:
            raise ValueError(f"evaluation status must be one of {', '.join(STATUSES)}, got {status!r}")
        values: dict[str, Any] = {"status": status, "error_message": error_message}
        if status == "running":
            values["started_at"] = now_ms()
        elif status in FINISHED:
            values["finished_at"] = now_ms()
        with begin_write(self.engine) as conn:
            updated = conn.execute(_ev.update().where(_ev.c.id == evaluation_id).values(values)).rowcount
        if not updated:
            raise NotFound(f"No evaluation {evaluation_id!r}.")

    def update_item(self, evaluation_id: str, item_index: int, /, **values: Any) -> None:
        """Change an item: ``outputs``, ``expectations``, ``inputs`` (JSON), ``trace_id``, ``span_id``,
        ``prompt_name``, ``prompt_version``, ``model``, ``status``, ``error_message``. Another key is a
        ValueError; an unknown item NotFound."""
        unknown = sorted(set(values) - _UPDATABLE)
        if unknown:
            raise ValueError(f"evaluation items have no field(s) {', '.join(unknown)}")
        if "status" in values and values["status"] not in ITEM_STATUSES:
            raise ValueError(f"item status must be one of {', '.join(ITEM_STATUSES)}, got {values['status']!r}")
        if not values:
            return
        where = sa.and_(_it.c.evaluation_id == evaluation_id, _it.c.item_index == item_index)
        with begin_write(self.engine) as conn:
            updated = conn.execute(_it.update().where(where).values(_encode(values))).rowcount
        if not updated:
            raise NotFound(f"No item {item_index} in evaluation {evaluation_id!r}.")


def _encode(values: Mapping[str, Any]) -> dict[str, Any]:
    """Item values as columns: the JSON fields as JSON text (None stays NULL)."""
    encoded = dict(values)
    for name in _JSON_FIELDS:
        if name in encoded and encoded[name] is not None:
            encoded[name] = orjson.dumps(encoded[name]).decode()
    return encoded


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    for name in _JSON_FIELDS:
        if row[name] is not None:
            row[name] = orjson.loads(row[name])
    return row


def _run(row: Row[Any]) -> dict[str, Any]:
    data = dict(row._mapping)
    data["request"] = orjson.loads(data["request"])
    return data


def _encode_token(row: Row[Any]) -> str:
    key = orjson.dumps([row.created_at, row.id])
    return base64.urlsafe_b64encode(key).decode("ascii").rstrip("=")


def _decode_token(token: str) -> tuple[int, str]:
    try:
        created_at, run_id = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if not (isinstance(created_at, int) and isinstance(run_id, str)):
            raise ValueError
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
        raise InvalidParameter(
            f"page_token {token[:64]!r} is not a token returned by this endpoint (use next_page_token)."
        ) from None
    return created_at, run_id
