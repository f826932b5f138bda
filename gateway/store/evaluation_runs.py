"""Which process runs an evaluation: the runs left unfinished, and claiming one of them.

Evaluation runs execute on an in-process queue (judges/evaluations.py). A process that stops leaves its
runs ``queued`` or ``running``; every gateway worker looks for them when it starts (:func:`unfinished_runs`)
and takes each with :func:`claim_run`, a compare-and-set on the run's status and ``started_at``: of several
workers starting together (``gateway serve --workers N``, or replicas sharing a PostgreSQL store), one
wins each run. Resuming is safe because assessments are written insert-if-absent under deterministic
ids (gateway/store/assessments.py): a job that already wrote leaves no second row.

The rows themselves are read and written by :class:`gateway.store.evaluations.EvaluationStore`.
"""

from __future__ import annotations

from typing import Final

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from gateway.store.assessments import now_ms
from gateway.store.engine import begin_read, begin_write
from gateway.store.schema import evaluations

_ev = evaluations
UNFINISHED: Final = ("queued", "running")


def unfinished_runs(engine: Engine) -> list[tuple[str, str, int | None]]:
    """``(id, status, started_at)`` of every run still ``queued`` or ``running``, oldest first."""
    query = (
        sa.select(_ev.c.id, _ev.c.status, _ev.c.started_at)
        .where(_ev.c.status.in_(UNFINISHED))
        .order_by(_ev.c.created_at, _ev.c.id)
    )
    with begin_read(engine) as conn:
        return [(row.id, row.status, row.started_at) for row in conn.execute(query)]


def claim_run(engine: Engine, evaluation_id: str, status: str, started_at: int | None) -> bool:
    """Mark the run ``running`` (``started_at`` now) if it is still in ``status`` with ``started_at`` as read
    by :func:`unfinished_runs`; True when this caller got it, False when another did (or it finished)."""
    unchanged = _ev.c.started_at.is_(None) if started_at is None else _ev.c.started_at == started_at
    statement = (
        _ev.update()
        .where(_ev.c.id == evaluation_id, _ev.c.status == status, unchanged)
        .values(status="running", started_at=max(now_ms(), (started_at or 0) + 1), finished_at=None)
    )
    with begin_write(engine) as conn:
        return bool(conn.execute(statement).rowcount)


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
