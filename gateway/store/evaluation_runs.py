"""Which process owns an evaluation run (its lease: claiming a run whose owner stopped, renewing and releasing
one's own), and the run's other reads and writes that must stay cheap: item states and outcomes in batches,
set-based settling of the items whose judges have all written, a run's outline for its progress.

Evaluation runs put their judge jobs on the judge queue (judges/evaluations.py); the process that owns a run
feeds it and settles it. Ownership is a lease: the run's ``owner`` (a process's random id) and
``heartbeat_at`` (epoch ms), set when the run is created and renewed by its owner (:func:`renew_leases`, one
statement for all its runs, every settle pass). A process that stops leaves its runs ``queued`` or
``running``, released (:func:`release_leases`) when it stops cleanly; every gateway worker looks, when it
starts and every few seconds after, for unfinished runs whose heartbeat is older than the lease timeout or
unset (:func:`claimable_runs`) and takes each with :func:`claim_run`, a compare-and-set on the run's status,
``started_at``, owner and heartbeat: of several workers (``gateway serve --workers N``, or replicas sharing a
PostgreSQL store), one wins each run, and a live owner (renewing) keeps it. Heartbeats are the processes'
wall clocks: their skew must stay well below the lease timeout. Resuming is safe because assessments are
written insert-if-absent under deterministic ids (gateway/store/assessments.py): a job that already wrote
leaves no second row.

The rows themselves are read and written by :class:`gateway.store.evaluations.EvaluationStore`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from gateway.store.assessments import JUDGE_SOURCES, Assessment, now_ms
from gateway.store.engine import begin_read, begin_write
from gateway.store.schema import assessments, evaluation_items, evaluations

_ev, _it, _a = evaluations, evaluation_items, assessments
UNFINISHED: Final = ("queued", "running")
STOPPED: Final = frozenset({"cancelled", "failed"})  # a run whose queued jobs are dropped unjudged
_OPEN_ITEMS: Final = ("pending", "queued")


@dataclass(frozen=True, slots=True)
class Settled:
    """What :func:`settle_items` did and saw: items it finished (``done``, ``errors``), the run's items still
    ``pending`` or ``queued`` after it, how many of those are ``queued``, and the run's status."""

    done: int
    errors: int
    remaining: int
    queued: int
    status: str | None


@dataclass(frozen=True, slots=True)
class Lease:
    """Who holds a run, as read: the owning process's id and its last heartbeat (epoch ms); both None on a run
    never owned, stored before the leases (migration 7), or released by an owner that stopped cleanly."""

    owner: str | None
    heartbeat_at: int | None


@dataclass(frozen=True, slots=True)
class Claimable:
    """An unfinished run whose lease has expired, as :func:`claimable_runs` read it (what :func:`claim_run`
    compares)."""

    id: str
    status: str
    started_at: int | None
    lease: Lease


def claimable_runs(engine: Engine, expired_before: int) -> list[Claimable]:
    """The runs still ``queued`` or ``running`` whose heartbeat is older than ``expired_before`` (epoch ms) or was
    never set: their owner stopped (or never was), oldest first."""
    expired = sa.or_(_ev.c.heartbeat_at.is_(None), _ev.c.heartbeat_at < expired_before)
    query = (
        sa.select(_ev.c.id, _ev.c.status, _ev.c.started_at, _ev.c.owner, _ev.c.heartbeat_at)
        .where(_ev.c.status.in_(UNFINISHED), expired)
        .order_by(_ev.c.created_at, _ev.c.id)
    )
    with begin_read(engine) as conn:
        return [
            Claimable(row.id, row.status, row.started_at, Lease(row.owner, row.heartbeat_at))
            for row in conn.execute(query)
        ]


def claim_run(
    engine: Engine, evaluation_id: str, status: str, started_at: int | None, *, owner: str, lease: Lease | None
) -> bool:
    """Mark the run ``running`` (``started_at`` now), held by ``owner`` (heartbeat now), if it is still in
    ``status`` with ``started_at`` as read and, with a ``lease`` (read by :func:`claimable_runs`), still held
    under that lease (a takeover), or, with None, already held by ``owner`` (its creator starting it). True
    when this caller got it, False when another did (or it finished, or its owner renewed the lease)."""
    if lease is None:
        held = _ev.c.owner == owner
    else:
        held = sa.and_(_is(_ev.c.owner, lease.owner), _is(_ev.c.heartbeat_at, lease.heartbeat_at))
    now = now_ms()
    statement = (
        _ev.update()
        .where(_ev.c.id == evaluation_id, _ev.c.status == status, _is(_ev.c.started_at, started_at), held)
        .values(
            status="running",
            started_at=max(now, (started_at or 0) + 1),
            finished_at=None,
            owner=owner,
            heartbeat_at=now,
        )
    )
    with begin_write(engine) as conn:
        return bool(conn.execute(statement).rowcount)


def renew_leases(engine: Engine, owner: str, evaluation_ids: Sequence[str]) -> dict[str, str | None]:
    """Renew ``owner``'s lease on these runs (heartbeat now) in one statement, a compare-and-set on the owner;
    the runs among them held by another process now (their lease was taken), each with its owner now (a run
    no longer stored is not among them). The second query runs only when some run was not renewed."""
    ids = list(evaluation_ids)
    if not ids:
        return {}
    statement = _ev.update().where(_ev.c.id.in_(ids), _ev.c.owner == owner).values(heartbeat_at=now_ms())
    with begin_write(engine) as conn:
        if conn.execute(statement).rowcount == len(ids):
            return {}
        others = sa.select(_ev.c.id, _ev.c.owner).where(
            _ev.c.id.in_(ids), sa.or_(_ev.c.owner.is_(None), _ev.c.owner != owner)
        )
        return {row.id: row.owner for row in conn.execute(others)}


def release_leases(engine: Engine, owner: str) -> int:
    """``owner``'s unfinished runs released (owner and heartbeat cleared) when it stops cleanly: another process
    takes them at its next claim instead of after the lease timeout; how many."""
    statement = (
        _ev.update().where(_ev.c.owner == owner, _ev.c.status.in_(UNFINISHED)).values(owner=None, heartbeat_at=None)
    )
    with begin_write(engine) as conn:
        return int(conn.execute(statement).rowcount)


def _is(column: sa.ColumnElement[Any], value: Any) -> sa.ColumnElement[bool]:
    """``column`` equals ``value``, NULL matching None (a compare-and-set on a nullable column)."""
    return column.is_(None) if value is None else column == value


def finish_run(engine: Engine, evaluation_id: str, status: str, *, error_message: str | None = None) -> bool:
    """Set a finished ``status`` (completed, cancelled or failed) unless the run has finished already (a
    cancel from another worker wins over the completion its owner notices later); True when it changed."""
    if status not in ("completed", "cancelled", "failed"):
        raise ValueError(f"not a finished status: {status!r}")
    statement = (
        _ev.update()
        .where(_ev.c.id == evaluation_id, _ev.c.status.in_(UNFINISHED))
        .values(status=status, finished_at=now_ms(), error_message=error_message)
    )
    with begin_write(engine) as conn:
        return bool(conn.execute(statement).rowcount)


def run_status(engine: Engine, evaluation_id: str) -> str | None:
    """The run's status alone (a cheap poll: is it cancelled?); None for an unknown run."""
    with begin_read(engine) as conn:
        status: str | None = conn.execute(sa.select(_ev.c.status).where(_ev.c.id == evaluation_id)).scalar()
    return status


def set_item_statuses(engine: Engine, outcomes: Sequence[tuple[str, int, str, str | None]]) -> None:
    """``(evaluation_id, item_index, status, error_message)`` of many items in one transaction: the
    evaluation queue writes its items' outcomes in batches (one commit per item cost as much as the judge
    call itself on SQLite)."""
    if not outcomes:
        return
    statement = (
        _it.update()
        .where(_it.c.evaluation_id == sa.bindparam("e_id"), _it.c.item_index == sa.bindparam("e_index"))
        .values(status=sa.bindparam("e_status"), error_message=sa.bindparam("e_error"))
    )
    rows = [{"e_id": e, "e_index": i, "e_status": s, "e_error": m} for e, i, s, m in outcomes]
    with begin_write(engine) as conn:
        conn.execute(statement, rows)


def run_outline(engine: Engine, evaluation_id: str) -> tuple[list[dict[str, Any]], list[Assessment]]:
    """What a run's progress and aggregates need, without the items' contents nor the assessments' texts:
    the items' index, status, prompt name and version and model, and the assessments' id, item, name,
    source, value, score, label and error code (the rest left at their defaults)."""
    items = sa.select(_it.c.item_index, _it.c.status, _it.c.prompt_name, _it.c.prompt_version, _it.c.model).where(
        _it.c.evaluation_id == evaluation_id
    )
    verdicts = sa.select(
        _a.c.id, _a.c.item_index, _a.c.name, _a.c.source_type, _a.c.value, _a.c.score, _a.c.label, _a.c.error_code
    ).where(_a.c.evaluation_id == evaluation_id)
    with begin_read(engine) as conn:
        item_rows = [dict(row._mapping) for row in conn.execute(items.order_by(_it.c.item_index))]
        assessments = [
            Assessment(
                id=row.id,
                evaluation_id=evaluation_id,
                item_index=row.item_index,
                name=row.name,
                source_type=row.source_type,
                value=None if row.value is None else orjson.loads(row.value),
                score=row.score,
                label=row.label,
                error_code=row.error_code,
            )  # fmt: skip
            for row in conn.execute(verdicts)
        ]
    return item_rows, assessments


def item_states(engine: Engine, evaluation_id: str) -> list[tuple[int, str, bool]]:
    """``(item_index, status, needs_outputs)`` of every item of the run, by index, without their contents;
    ``needs_outputs``: no outputs and no stored call (a target generates them)."""
    needs = sa.and_(_it.c.outputs.is_(None), _it.c.trace_id.is_(None))
    query = (
        sa.select(_it.c.item_index, _it.c.status, sa.case((needs, 1), else_=0).label("needs"))
        .where(_it.c.evaluation_id == evaluation_id)
        .order_by(_it.c.item_index)
    )
    with begin_read(engine) as conn:
        return [(row.item_index, row.status, bool(row.needs)) for row in conn.execute(query)]


def judged_pairs(engine: Engine, evaluation_id: str) -> set[tuple[int, str]]:
    """``(item_index, judge name)`` of the judges' verdicts already stored for the run (a resumed run skips them)."""
    query = sa.select(_a.c.item_index, _a.c.name).where(
        _a.c.evaluation_id == evaluation_id, _a.c.source_type.in_(JUDGE_SOURCES), _a.c.item_index.is_not(None)
    )
    with begin_read(engine) as conn:
        return {(row.item_index, row.name) for row in conn.execute(query)}


def settle_items(engine: Engine, evaluation_id: str, judge_names: Sequence[str]) -> Settled:
    """Finish the run's ``queued`` items whose judges (``judge_names``) have all written their verdict:
    ``done``, or ``error`` when a verdict is an error (the message names how many and the first one, in the
    order of ``judge_names``). Set-based: one query finds them whatever their number, one transaction
    writes them; nothing is written when none is complete."""
    names = list(judge_names)
    joined = _a.join(_it, sa.and_(_it.c.evaluation_id == _a.c.evaluation_id, _it.c.item_index == _a.c.item_index))
    complete = (
        sa.select(_a.c.item_index)
        .select_from(joined)
        .where(
            _a.c.evaluation_id == evaluation_id,
            _it.c.status == "queued",
            _a.c.source_type.in_(JUDGE_SOURCES),
            _a.c.name.in_(names),
        )
        .group_by(_a.c.item_index)
        .having(sa.func.count(sa.distinct(_a.c.name)) == len(names))
    )
    failures = sa.select(_a.c.item_index, _a.c.name, _a.c.error_code, _a.c.error_message).where(
        _a.c.evaluation_id == evaluation_id,
        _a.c.source_type.in_(JUDGE_SOURCES),
        _a.c.name.in_(names),
        _a.c.error_code.is_not(None),
        _a.c.item_index.in_(complete.scalar_subquery()),
    )
    with begin_read(engine) as conn:
        indexes = list(conn.execute(complete).scalars())
        failed: dict[int, list[tuple[str, str, str | None]]] = {}
        if indexes:
            for row in conn.execute(failures):
                failed.setdefault(row.item_index, []).append((row.name, row.error_code, row.error_message))
    outcomes: list[tuple[str, int, str, str | None]] = []
    order = {name: position for position, name in enumerate(names)}
    for index in indexes:
        errors = sorted(failed.get(index, ()), key=lambda entry: order.get(entry[0], len(order)))
        if errors:
            name, code, message = errors[0]
            text = f"{len(errors)} judge(s) recorded an error; {name}: {code}: {message}"
            outcomes.append((evaluation_id, index, "error", text))
        else:
            outcomes.append((evaluation_id, index, "done", None))
    counts = (
        sa.select(_it.c.status, sa.func.count())
        .where(_it.c.evaluation_id == evaluation_id, _it.c.status.in_(_OPEN_ITEMS))
        .group_by(_it.c.status)
    )
    with begin_write(engine) as conn:
        if outcomes:
            conn.execute(_settle_statement(), [_settle_row(*outcome) for outcome in outcomes])
        open_items = {row[0]: int(row[1]) for row in conn.execute(counts)}
        status = conn.execute(sa.select(_ev.c.status).where(_ev.c.id == evaluation_id)).scalar()
    errors_count = sum(1 for outcome in outcomes if outcome[2] == "error")
    return Settled(
        done=len(outcomes) - errors_count,
        errors=errors_count,
        remaining=sum(open_items.values()),
        queued=open_items.get("queued", 0),
        status=status,
    )


def _settle_statement() -> Any:
    """An item's outcome, written only while it is still ``queued`` (never over another outcome)."""
    return (
        _it.update()
        .where(
            _it.c.evaluation_id == sa.bindparam("e_id"),
            _it.c.item_index == sa.bindparam("e_index"),
            _it.c.status == "queued",
        )
        .values(status=sa.bindparam("e_status"), error_message=sa.bindparam("e_error"))
    )


def _settle_row(evaluation_id: str, index: int, status: str, error: str | None) -> dict[str, Any]:
    return {"e_id": evaluation_id, "e_index": index, "e_status": status, "e_error": error}


def requeue_items(engine: Engine, evaluation_id: str) -> int:
    """A stopped run's ``queued`` items back to ``pending`` (their jobs were dropped unjudged); how many."""
    statement = (
        _it.update().where(_it.c.evaluation_id == evaluation_id, _it.c.status == "queued").values(status="pending")
    )
    with begin_write(engine) as conn:
        return int(conn.execute(statement).rowcount)
