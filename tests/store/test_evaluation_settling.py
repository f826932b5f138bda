"""The evaluation queue's store side on SQLite and PostgreSQL: items' states without their contents, the verdicts
already stored, settling the ``queued`` items whose judges have all written (set-based: ``done``, or ``error``
naming the first error verdict in the run's judge order), and a stopped run's ``queued`` items back to
``pending``."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from gateway.store.assessments import HUMAN, LLM_JUDGE, Assessment, AssessmentStore
from gateway.store.evaluation_runs import (
    Settled,
    finish_run,
    item_states,
    judged_pairs,
    requeue_items,
    set_item_statuses,
    settle_items,
)
from gateway.store.evaluations import EvaluationStore
from gateway.store.registry import RegistryStore

JUDGES = ("relevance", "safety")


@pytest.fixture
def stores(store_url: str) -> Iterator[tuple[EvaluationStore, AssessmentStore]]:
    registry = RegistryStore.open(store_url)
    try:
        yield EvaluationStore(registry.engine), AssessmentStore(registry.engine)
    finally:
        registry.close()


def _verdict(run: str, index: int, name: str, *, error: str | None = None, source: str = LLM_JUDGE) -> Assessment:
    message = f"{error} happened" if error else None
    return Assessment(id=str(uuid.uuid4()), evaluation_id=run, item_index=index, name=name, source_type=source,
                      value=None if error else True, error_code=error, error_message=message)  # fmt: skip


def test_settle_finishes_the_queued_items_whose_judges_all_wrote(
    stores: tuple[EvaluationStore, AssessmentStore],
) -> None:
    evaluations, assessments = stores
    engine = evaluations.engine
    run = str(uuid.uuid4())
    items = [{"inputs": f"q{i}", "outputs": None if i == 4 else f"a{i}"} for i in range(5)]
    evaluations.create(run, {"judges": [{"name": n} for n in JUDGES]}, items, judge_count=2)
    evaluations.set_status(run, "running")
    assert item_states(engine, run) == [(0, "pending", False), (1, "pending", False), (2, "pending", False),
                                        (3, "pending", False), (4, "pending", True)]  # fmt: skip
    set_item_statuses(engine, [(run, i, "queued", None) for i in range(4)])
    assessments.insert_if_absent(
        [
            _verdict(run, 0, "relevance"), _verdict(run, 0, "safety"),  # complete
            _verdict(run, 1, "relevance"), _verdict(run, 1, "safety", error="timeout"),  # complete, an error
            _verdict(run, 2, "safety", error="no_json"), _verdict(run, 2, "relevance", error="timeout"),
            _verdict(run, 3, "safety"), _verdict(run, 3, "relevance", source=HUMAN),  # a person's label: not a verdict
        ]
    )  # fmt: skip
    assert judged_pairs(engine, run) == {(0, "relevance"), (0, "safety"), (1, "relevance"), (1, "safety"),
                                         (2, "safety"), (2, "relevance"), (3, "safety")}  # fmt: skip
    settled = settle_items(engine, run, JUDGES)
    assert settled == Settled(done=1, errors=2, remaining=2, queued=1, status="running")
    by_index = {item["item_index"]: item for item in evaluations.items(run)}
    assert by_index[0]["status"] == "done" and by_index[0]["error_message"] is None
    assert by_index[1]["status"] == "error"
    assert by_index[1]["error_message"] == "1 judge(s) recorded an error; safety: timeout: timeout happened"
    assert by_index[2]["error_message"] == "2 judge(s) recorded an error; relevance: timeout: timeout happened"
    assert (by_index[3]["status"], by_index[4]["status"]) == ("queued", "pending")
    # Settled items are not settled again; nothing new: nothing written.
    assert settle_items(engine, run, JUDGES) == Settled(done=0, errors=0, remaining=2, queued=1, status="running")
    assessments.insert_if_absent([_verdict(run, 3, "relevance")])
    set_item_statuses(engine, [(run, 4, "error", "The target route failed")])
    assert settle_items(engine, run, JUDGES) == Settled(done=1, errors=0, remaining=0, queued=0, status="running")


def test_a_stopped_runs_queued_items_go_back_to_pending(stores: tuple[EvaluationStore, AssessmentStore]) -> None:
    evaluations, _ = stores
    engine = evaluations.engine
    run = str(uuid.uuid4())
    evaluations.create(run, {"judges": [{"name": "safety"}]}, [{"inputs": "q", "outputs": "a"}] * 3, judge_count=1)
    set_item_statuses(engine, [(run, 0, "queued", None), (run, 1, "queued", None), (run, 2, "done", None)])
    assert finish_run(engine, run, "cancelled")
    assert settle_items(engine, run, ["safety"]).status == "cancelled"
    assert requeue_items(engine, run) == 2
    assert [item["status"] for item in evaluations.items(run)] == ["pending", "pending", "done"]
    assert settle_items(engine, "no-such-run", ["safety"]) == Settled(0, 0, 0, 0, None)
