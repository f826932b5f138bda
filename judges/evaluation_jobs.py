"""Evaluation runs' judge jobs, on both sides of the judge queue.

- The owner of a run (judges/evaluation_feed.py) makes one :class:`JudgeJob` per (item, judge), kind
  ``evaluation``, with the judge's prompt version pinned from the run's plan (:func:`item_jobs`).
- A worker (judges/worker/items.py) judges such a job with exactly the run's judge: :class:`RunJudges`
  resolves it from the run's stored request (its pinned prompt version, and the ``guidelines`` the run
  gave the guidelines judge), never from the catalog by name alone, cached per run; and it tells whether
  the run was stopped (cancelled or failed: its queued jobs are acked without a judge call), from the
  run's status read at most every ``STATUS_TTL_S`` per run.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from gateway.store.evaluation_runs import STOPPED, run_status
from gateway.store.evaluations import EvaluationStore
from judges.catalog import JudgeCatalog, parse_guidelines
from judges.definitions import Judge
from judges.queue.jobs import EVALUATION, JudgeJob

STATUS_TTL_S: Final = 0.5  # a cancel reaches the workers within this (plus the jobs already in work)
_CACHED_RUNS: Final = 256


def item_jobs(
    evaluation_id: str,
    indexes: Iterable[int],
    judges: Sequence[tuple[str, int | None]],
    *,
    judged: set[tuple[int, str]] | frozenset[tuple[int, str]] = frozenset(),
) -> list[JudgeJob]:
    """The jobs of these items: one per (item, judge) not in ``judged`` (a verdict already stored);
    ``judges`` are (name, pinned prompt version)."""
    now = time.time()
    return [
        JudgeJob(
            kind=EVALUATION,
            judge=name,
            enqueued_at=now,
            evaluation_id=evaluation_id,
            item_index=index,
            judge_version=version,
        )  # fmt: skip
        for index in indexes
        for name, version in judges
        if (index, name) not in judged
    ]


def stored_judge(catalog: JudgeCatalog, spec: Mapping[str, Any]) -> Judge:
    """A judge of a run as its stored request names it (judges/evaluation_plan.py's ``judge_to_dict``): at
    its pinned prompt version (the catalog's current one when none was kept; a code judge at its configured
    version), with the run's guidelines. NotFound when this process's catalog does not hold that version."""
    name = str(spec["name"])
    version = spec.get("prompt_version")
    judge = catalog.get(name) if version is None else catalog.at_version(name, int(version))
    if judge.uses_guidelines:
        judge = judge.with_guidelines(parse_guidelines(spec.get("guidelines"), "guidelines"))
    return judge


class RunJudges:
    """A worker's view of the runs whose jobs it takes: their judges and whether they were stopped."""

    def __init__(self, catalog: JudgeCatalog, evaluations: EvaluationStore) -> None:
        self.catalog = catalog
        self.evaluations = evaluations
        self._specs: OrderedDict[str, dict[str, Mapping[str, Any]]] = OrderedDict()
        self._judges: OrderedDict[tuple[str, str], Judge] = OrderedDict()
        self._status: dict[str, tuple[float, str | None]] = {}

    def judge(self, job: JudgeJob) -> Judge | None:
        """The run's judge for ``job``; None when the run (or that judge in it) is unknown here, for the caller
        to resolve by name. Reads the run's request once per run (a primary-key read, blocking); NotFound
        when the pinned version is not in this process's prompt catalog (yet)."""
        assert job.evaluation_id is not None
        key = (job.evaluation_id, job.judge)
        found = self._judges.get(key)
        if found is not None:
            return found
        specs = self._specs.get(job.evaluation_id)
        if specs is None:
            row = self.evaluations.get(job.evaluation_id)
            if row is None:
                return None
            specs = {str(spec["name"]): spec for spec in row["request"].get("judges", [])}
            _put(self._specs, job.evaluation_id, specs)
        spec = specs.get(job.judge)
        if spec is None:
            return None
        judge = stored_judge(self.catalog, spec)
        _put(self._judges, key, judge)
        return judge

    async def stopped(self, evaluation_id: str) -> bool:
        """Whether the run was cancelled or failed (its status at most ``STATUS_TTL_S`` old)."""
        now = time.monotonic()
        cached = self._status.get(evaluation_id)
        if cached is None or now - cached[0] > STATUS_TTL_S:
            status = await asyncio.to_thread(run_status, self.evaluations.engine, evaluation_id)
            if len(self._status) >= _CACHED_RUNS:
                self._status.clear()
            cached = self._status[evaluation_id] = (now, status)
        return cached[1] in STOPPED


def _put(cache: OrderedDict[Any, Any], key: Any, value: Any) -> None:
    cache[key] = value
    while len(cache) > _CACHED_RUNS:
        cache.popitem(last=False)
