"""What a judge job judges: the judge (at its pinned version when the job names one) and the item.

- An online job reads its trace's summaries (gateway/store/traces.py) and judges the one of its span
  (the first one when the job has no span), as ``judges.evaluation_plan.trace_item`` reads it. A trace
  not stored yet (the trace sink writes in batches) raises :class:`NotReady`: the worker retries later
  without using an attempt. A judge call's own trace (a summary with ``gateway.judge.*`` attributes) is
  never judged: :class:`NotJudged`, checked again here although the sampler checks it first. The reads of
  the jobs started in one turn of the event loop (one claim's) are one query (judges/batching.py).
- An evaluation job is judged with exactly the run's judge: resolved from the run's stored request (its
  pinned prompt version and guidelines; judges/evaluation_jobs.py, cached per run), the catalog's judge by
  name only for a run this store does not hold. A pinned version this process's prompt catalog does not
  hold yet (a judge created a moment ago elsewhere) raises :class:`NotReady`. A job of a run that was
  cancelled or failed raises :class:`RunStopped` (a :class:`NotJudged`: acked without a judge call,
  counted ``skipped``). It reads its item from the run's items (gateway/store/evaluations.py); a missing
  run or item raises LookupError (a job that cannot run: attempts, then the dead letters).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping
from typing import Any

from gateway.errors import NotFound
from gateway.store.evaluations import EvaluationStore
from gateway.store.traces import TraceStore
from judges.batching import Coalescer
from judges.catalog import JudgeCatalog
from judges.definitions import Judge
from judges.evaluation_jobs import RunJudges
from judges.evaluation_plan import trace_item
from judges.queue.jobs import EVALUATION, JudgeJob
from judges.runner import Target

JUDGE_ATTRIBUTE_PREFIX = "gateway.judge."


class NotReady(Exception):
    """The job's trace is not stored yet: retry later, no attempt used."""


class NotJudged(Exception):
    """The job's target is a judge call (``gateway.judge.*``): acked with no assessment."""


class RunStopped(NotJudged):
    """The job's evaluation run was cancelled or failed: acked with no judge call and no assessment."""


@dataclasses.dataclass(frozen=True, slots=True)
class JobInput:
    """A job ready to run: the judge, the item, the target and the evaluation (None: online)."""

    judge: Judge
    item: Mapping[str, Any]
    target: Target
    evaluation_id: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class JobReader:
    """Reads what jobs need from the store and the judge catalog."""

    catalog: JudgeCatalog
    traces: TraceStore
    evaluations: EvaluationStore
    runs: RunJudges = dataclasses.field(init=False)
    _traces: Coalescer[str, list[dict[str, Any]]] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "runs", RunJudges(self.catalog, self.evaluations))
        object.__setattr__(self, "_traces", Coalescer(self._read_traces))

    async def _read_traces(self, trace_ids: list[str]) -> list[list[dict[str, Any]]]:
        found = await asyncio.to_thread(self.traces.get_many, trace_ids)
        return [found.get(trace_id.lower(), []) for trace_id in trace_ids]

    def judge(self, job: JudgeJob) -> Judge:
        """The job's judge (NotFound or JudgeUnusable when there is none usable: the caller pauses it)."""
        if job.kind == EVALUATION:
            try:
                found = self.runs.judge(job)
            except NotFound as exc:  # this process's prompt catalog is behind: retried, no attempt used
                raise NotReady(
                    f"The run's judge {job.judge!r} is not in this process's catalog yet: {exc.message}"
                ) from None
            if found is not None:
                return found
        if job.judge_version is None:
            return self.catalog.get(job.judge)
        return self.catalog.at_version(job.judge, job.judge_version)

    def target(self, job: JudgeJob) -> Target:
        """The assessment's target, known without reading the item (for an error assessment)."""
        if job.kind == EVALUATION:
            return Target(item_index=job.item_index)
        return Target(trace_id=job.trace_id, span_id=job.span_id)

    async def read(self, job: JudgeJob, judge: Judge) -> JobInput:
        if job.kind == EVALUATION:
            assert job.evaluation_id is not None and job.item_index is not None  # JudgeJob.from_fields checks
            if await self.runs.stopped(job.evaluation_id):
                raise RunStopped(f"Evaluation {job.evaluation_id} was cancelled or failed.")
            item = await asyncio.to_thread(self.evaluations.item, job.evaluation_id, job.item_index)
            if item is None:
                raise LookupError(f"No item {job.item_index} in evaluation {job.evaluation_id!r}.")
            target = Target(item.get("trace_id"), item.get("span_id"), job.item_index)
            return JobInput(judge, item, target, job.evaluation_id)
        assert job.trace_id is not None
        summaries = await self._traces(job.trace_id)
        summary = next((s for s in summaries if job.span_id is None or s["span_id"] == job.span_id), None)
        if summary is None:
            raise NotReady(f"The trace {job.trace_id} (span {job.span_id}) is not stored yet.")
        attributes = summary.get("attributes") or {}
        if any(str(name).startswith(JUDGE_ATTRIBUTE_PREFIX) for name in attributes):
            raise NotJudged(f"The trace {job.trace_id} is a judge call.")
        return JobInput(judge, trace_item(summary), Target(job.trace_id, summary["span_id"]), None)
