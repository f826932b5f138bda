"""Assessments: what a judge (``LLM_JUDGE``), a person (``HUMAN``) or code (``CODE``) said about a target,
in the shape of MLflow's Feedback.

A target is a span of a stored trace (``trace_id``, ``span_id``) or an item of an evaluation run
(``evaluation_id``, ``item_index``); an assessment of a trace-sourced item names both. Ids are
deterministic (:func:`assessment_id`: a uuid5 of the target, the judge's name and version, and the
evaluation id or ``"online"``, as Langfuse derives its score ids) and judges write with
:meth:`AssessmentStore.insert_if_absent` ("on conflict do nothing"), so a retried job, or the same run
started again, never stores one verdict twice, on any number of replicas. Human feedback is the one kind
that is replaced (:meth:`AssessmentStore.upsert_human`): the same person labelling the same target again
changes their label instead of adding one.

Every value gets its numeric ``score`` and its ``label`` by one rule, :func:`score_and_label` (the judges
use it too), so the trace filters (``GET /api/traces?assessment=...&min_score=...``) and the aggregates
read the same columns whoever wrote the row.
"""

from __future__ import annotations

import dataclasses
import math
import time
import uuid
from collections.abc import Sequence
from typing import Any, Final

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine, Row

from gateway.store.engine import begin_read, begin_write
from gateway.store.schema import assessments

_a = assessments

# Fixed for ever: changing it would give every target new ids, and re-runs would write twice.
NAMESPACE: Final = uuid.UUID("0b6f4d2e-57a1-4c7e-9a3d-8e2f1c6b5a90")
ONLINE: Final = "online"  # the "evaluation id" of an assessment made outside any evaluation run
LLM_JUDGE: Final = "LLM_JUDGE"
HUMAN: Final = "HUMAN"
CODE: Final = "CODE"
JUDGE_SOURCES: Final = (LLM_JUDGE, CODE)  # a judge's verdict (an evaluation run's items wait for these)
SOURCE_TYPES: Final = (LLM_JUDGE, HUMAN, CODE)

# Longest text each bounded column takes: longer text is cut there (a judge's free-text label, a model
# name from an upstream), the same on SQLite as on PostgreSQL, which would refuse the row instead.
COLUMN_LENGTHS: Final[dict[str, int]] = {
    c.name: int(c.type.length) for c in _a.columns if isinstance(c.type, sa.String) and c.type.length
}
LABEL_LENGTH: Final = COLUMN_LENGTHS["label"]


def trace_target(trace_id: str, span_id: str | None) -> str:
    """The target key of a span of a stored trace (``span_id`` None: the trace as a whole)."""
    return f"trace:{trace_id.lower()}:{(span_id or '').lower()}"


def item_target(evaluation_id: str, item_index: int) -> str:
    """The target key of an item of an evaluation run."""
    return f"item:{evaluation_id}:{item_index}"


def assessment_id(*, target: str, judge_name: str, judge_version: int | str, evaluation_id: str | None) -> str:
    """The deterministic id of one verdict: the same target, judge, judge version and run give the same id.

    ``target`` is :func:`trace_target` or :func:`item_target`; ``judge_version`` is the judge's prompt
    version (``"human:<source id>"`` for human feedback, so one person has one label per target).
    """
    key = f"{target}\x1f{judge_name}\x1f{judge_version}\x1f{evaluation_id or ONLINE}"
    return str(uuid.uuid5(NAMESPACE, key))


def score_and_label(value: Any) -> tuple[float | None, str | None]:
    """The ``score`` and ``label`` columns of a value: a bool is 1.0/0.0 and "yes"/"no"; a number is its
    score (no label; a non-finite one neither); a string is its label (cut to 255 characters, no score);
    anything else (None, a list, an object) neither."""
    if isinstance(value, bool):
        return (1.0, "yes") if value else (0.0, "no")
    if isinstance(value, int | float):
        try:
            score = float(value)
        except OverflowError:  # an int beyond a float's range
            return None, None
        return (score, None) if math.isfinite(score) else (None, None)
    if isinstance(value, str):
        return None, value[:LABEL_LENGTH]
    return None, None


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Assessment:
    """One row of ``assessments``: ``value`` as Python (decoded JSON; None for an error assessment),
    ``metadata`` a dict. Build one with keywords; ``score`` and ``label`` come from
    :func:`score_and_label` (the caller sets them: the store keeps what it is given)."""

    id: str
    trace_id: str | None = None
    span_id: str | None = None
    evaluation_id: str | None = None
    item_index: int | None = None
    name: str
    source_type: str
    source_id: str | None = None
    value: Any = None
    score: float | None = None
    label: str | None = None
    rationale: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    judge_prompt_name: str | None = None
    judge_prompt_version: int | None = None
    judge_model: str | None = None
    judge_trace_id: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float | None = None
    latency_ms: float | None = None
    attempts: int | None = None
    created_at: int = dataclasses.field(default_factory=now_ms)
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def target(self) -> str:
        """The target key: the span of a trace when there is one, else the item of the evaluation run."""
        if self.trace_id is not None:
            return trace_target(self.trace_id, self.span_id)
        return item_target(self.evaluation_id or "", self.item_index if self.item_index is not None else -1)

    @property
    def is_error(self) -> bool:
        return self.error_code is not None

    def to_dict(self) -> dict[str, Any]:
        """The API shape: every column by its name."""
        return {name: getattr(self, name) for name in _FIELDS}


_FIELDS: Final = tuple(f.name for f in dataclasses.fields(Assessment))  # the columns, in order (a test checks)


class AssessmentStore:
    """Assessment reads and writes over the store's engine (SQLite or PostgreSQL); safe to share between threads."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._insert: Any = postgresql.insert(_a) if engine.dialect.name == "postgresql" else sqlite.insert(_a)

    def insert_if_absent(self, assessments: Sequence[Assessment]) -> int:
        """Insert in one transaction; an id already stored (or repeated in ``assessments``) is skipped.
        Returns the number of rows actually inserted."""
        rows = list({a.id: _row(a) for a in assessments}.values())
        if not rows:
            return 0
        statement = self._insert.on_conflict_do_nothing(index_elements=["id"]).returning(_a.c.id)
        with begin_write(self.engine) as conn:
            return len(conn.execute(statement, rows).all())

    def insert_new(self, assessments: Sequence[Assessment]) -> list[bool | Exception]:
        """Insert if absent, in one transaction, telling for each assessment whether this call stored it
        (False: its id was stored already, or came earlier in ``assessments``). A row that cannot be stored
        for a reason of its own fails alone: its entry is the exception (a batch the database refuses is
        tried again row by row). The store's own failure (OperationalError) is raised."""
        answers: list[bool | Exception | None] = [None] * len(assessments)
        rows: dict[str, dict[str, Any]] = {}
        for index, assessment in enumerate(assessments):
            try:
                row = _row(assessment)
            except Exception as exc:  # a value that is not JSON
                answers[index] = exc
                continue
            rows.setdefault(assessment.id, row)  # the first of a repeated id is the one inserted
        failed: dict[str, Exception] = {}
        try:
            inserted = self._insert_rows(list(rows.values())) if rows else set()
        except sa.exc.OperationalError:
            raise
        except Exception:
            if len(rows) == 1:
                raise
            inserted = set()
            for ident, row in rows.items():
                try:
                    inserted |= self._insert_rows([row])
                except sa.exc.OperationalError:
                    raise
                except Exception as exc:
                    failed[ident] = exc
        for index, assessment in enumerate(assessments):
            if answers[index] is None:
                answers[index] = failed.get(assessment.id) or assessment.id in inserted
                inserted.discard(assessment.id)
        return [answer if answer is not None else False for answer in answers]

    def _insert_rows(self, rows: list[dict[str, Any]]) -> set[str]:
        statement = self._insert.on_conflict_do_nothing(index_elements=["id"]).returning(_a.c.id)
        with begin_write(self.engine) as conn:
            return set(conn.execute(statement, rows).scalars())

    def get_many(self, assessment_ids: Sequence[str]) -> dict[str, Assessment]:
        """The stored assessments among ``assessment_ids``, by id (one query)."""
        if not assessment_ids:
            return {}
        found = self._read(sa.select(_a).where(_a.c.id.in_(sorted(set(assessment_ids)))))
        return {a.id: a for a in found}

    def upsert_human(self, assessment: Assessment) -> Assessment:
        """Store human feedback, replacing the assessment with the same id (the same person's earlier
        label of the same target: every column but the id takes the new value). Returns what is stored."""
        row = _row(assessment)
        statement = self._insert.values(row)
        statement = statement.on_conflict_do_update(
            index_elements=["id"], set_={name: statement.excluded[name] for name in row if name != "id"}
        ).returning(*_a.columns)
        with begin_write(self.engine) as conn:
            return _from_row(conn.execute(statement).one())

    def for_trace(self, trace_id: str) -> list[Assessment]:
        """The assessments of one trace (of any of its spans), oldest first."""
        query = sa.select(_a).where(_a.c.trace_id == trace_id.lower()).order_by(_a.c.created_at, _a.c.id)
        return self._read(query)

    def for_evaluation(self, evaluation_id: str) -> list[Assessment]:
        """The assessments of one evaluation run, by item, then name, then age."""
        query = (
            sa.select(_a)
            .where(_a.c.evaluation_id == evaluation_id)
            .order_by(_a.c.item_index, _a.c.name, _a.c.created_at, _a.c.id)
        )
        return self._read(query)

    def get(self, assessment_id: str) -> Assessment | None:
        rows = self._read(sa.select(_a).where(_a.c.id == assessment_id))
        return rows[0] if rows else None

    def exists(self, assessment_id: str) -> bool:
        query = sa.select(sa.literal(1)).where(_a.c.id == assessment_id)
        with begin_read(self.engine) as conn:
            return conn.execute(query).first() is not None

    def count(self, *, evaluation_id: str | None = None, name: str | None = None) -> int:
        """How many assessments there are (of that run, with that name, when given)."""
        query = sa.select(sa.func.count()).select_from(_a)
        if evaluation_id is not None:
            query = query.where(_a.c.evaluation_id == evaluation_id)
        if name is not None:
            query = query.where(_a.c.name == name)
        with begin_read(self.engine) as conn:
            return int(conn.execute(query).scalar_one())

    def pairs(self, name: str) -> list[tuple[str, Any, Any]]:
        """``(target key, HUMAN value, LLM_JUDGE value)`` for every target holding a value of both kinds
        for ``name`` (error assessments left out; the newest of each kind when there are several),
        ordered by target key. A target is the trace's span when the assessment names one, else the
        evaluation item, so a person's label of a trace pairs with any run's verdict on that trace."""
        query = (
            sa.select(_a.c.trace_id, _a.c.span_id, _a.c.evaluation_id, _a.c.item_index, _a.c.source_type, _a.c.value)
            .where(
                _a.c.name == name,
                _a.c.source_type.in_((HUMAN, LLM_JUDGE)),
                _a.c.error_code.is_(None),
                _a.c.value.is_not(None),
            )
            .order_by(_a.c.created_at, _a.c.id)
        )
        newest: dict[tuple[str, str], Any] = {}  # (target, source type) -> value; later rows overwrite
        with begin_read(self.engine) as conn:
            for row in conn.execute(query):
                if row.trace_id is not None:
                    target = trace_target(row.trace_id, row.span_id)
                else:
                    target = item_target(row.evaluation_id or "", row.item_index if row.item_index is not None else -1)
                newest[(target, row.source_type)] = row.value
        return [
            (target, orjson.loads(value), orjson.loads(newest[(target, LLM_JUDGE)]))
            for (target, kind), value in sorted(newest.items())
            if kind == HUMAN and (target, LLM_JUDGE) in newest
        ]

    def _read(self, query: sa.Select[Any]) -> list[Assessment]:
        with begin_read(self.engine) as conn:
            return [_from_row(row) for row in conn.execute(query)]


def _row(assessment: Assessment) -> dict[str, Any]:
    """An assessment as column values: JSON encoded, bounded text cut to its column."""
    row = assessment.to_dict()
    row["value"] = None if assessment.value is None else orjson.dumps(assessment.value).decode()
    row["metadata"] = orjson.dumps(assessment.metadata).decode()
    for column, length in COLUMN_LENGTHS.items():
        text = row[column]
        if isinstance(text, str) and len(text) > length:
            row[column] = text[:length]
    return row


def _from_row(row: Row[Any]) -> Assessment:
    data = dict(row._mapping)
    data["value"] = None if data["value"] is None else orjson.loads(data["value"])
    data["metadata"] = orjson.loads(data["metadata"]) if data["metadata"] else {}
    return Assessment(**data)
