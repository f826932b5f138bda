"""A judge job: one judge on one target (a stored LLM call, or an item of an evaluation run).

A job carries references, never content: the worker reads the captured call from the trace store (or
the item from the evaluation's items) when it runs the job, so a queue entry stays a few hundred
bytes whatever the size of the conversation. Its ``id`` is deterministic (the same job enqueued twice,
by a replay or by two replicas, has one id) and is what the assessment id is built from.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Final, Literal

ONLINE: Final = "online"
EVALUATION: Final = "evaluation"
JobKind = Literal["online", "evaluation"]


@dataclasses.dataclass(frozen=True, slots=True)
class JudgeJob:
    """One judge on one target. ``enqueued_at`` is wall-clock seconds (``time.time()``) at the first
    enqueue; a retried job keeps it, so the maximum job age and enqueue-to-done latency count from there."""

    kind: JobKind
    judge: str  # the judge's name (judges/catalog.py resolves it, with its prompt version)
    enqueued_at: float
    trace_id: str | None = None  # online: the judged call's trace
    span_id: str | None = None  # online: the judged call's top span
    evaluation_id: str | None = None  # evaluation: the run
    item_index: int | None = None  # evaluation: the item
    judge_version: int | None = None  # a pinned judge prompt version; None: the judge's current one

    @property
    def id(self) -> str:
        """Deterministic: the same judge on the same target is the same job."""
        if self.kind == EVALUATION:
            return f"evaluation:{self.evaluation_id}:{self.item_index}:{self.judge}"
        return f"online:{self.trace_id}:{self.span_id or '-'}:{self.judge}"

    def to_fields(self) -> dict[str, str]:
        """Flat string fields (a Redis stream entry, a SQLite row's JSON): absent values are left out."""
        fields = {"kind": self.kind, "judge": self.judge, "enqueued_at": repr(self.enqueued_at)}
        for name in ("trace_id", "span_id", "evaluation_id"):
            value = getattr(self, name)
            if value is not None:
                fields[name] = value
        for name in ("item_index", "judge_version"):
            value = getattr(self, name)
            if value is not None:
                fields[name] = str(value)
        return fields

    @classmethod
    def from_fields(cls, fields: Mapping[str | bytes, Any]) -> JudgeJob:
        """The inverse of :meth:`to_fields`; accepts bytes keys and values (redis-py without
        ``decode_responses``). Raises ValueError on a malformed entry (the caller dead-letters it)."""
        data = {_text(key): _text(value) for key, value in fields.items()}
        kind = data.get("kind")
        if kind not in (ONLINE, EVALUATION) or not data.get("judge"):
            raise ValueError(f"not a judge job: kind={kind!r}, judge={data.get('judge')!r}")
        job = cls(
            kind=kind,  # type: ignore[arg-type]
            judge=data["judge"],
            enqueued_at=float(data.get("enqueued_at", "0")),
            trace_id=data.get("trace_id"),
            span_id=data.get("span_id"),
            evaluation_id=data.get("evaluation_id"),
            item_index=int(data["item_index"]) if "item_index" in data else None,
            judge_version=int(data["judge_version"]) if "judge_version" in data else None,
        )
        if job.kind == ONLINE and job.trace_id is None:
            raise ValueError("an online judge job needs a trace_id")
        if job.kind == EVALUATION and (job.evaluation_id is None or job.item_index is None):
            raise ValueError("an evaluation judge job needs an evaluation_id and an item_index")
        return job


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
