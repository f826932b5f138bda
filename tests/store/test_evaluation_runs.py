"""The evaluation queue's store functions on SQLite and PostgreSQL: unfinished runs and claiming one (one
winner), finishing only an unfinished run, item outcomes in one batch, a run's outline."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.engine import Engine

from gateway.store.assessments import LLM_JUDGE, Assessment, AssessmentStore
from gateway.store.evaluation_runs import (
    claim_run,
    finish_run,
    run_outline,
    run_status,
    set_item_statuses,
    unfinished_runs,
)
from gateway.store.evaluations import EvaluationStore
from gateway.store.registry import RegistryStore

RUN = "0c1d2e3f-0000-4000-8000-000000000001"
OTHER = "0c1d2e3f-0000-4000-8000-000000000002"


@pytest.fixture
def engine(store_url: str) -> Iterator[Engine]:
    registry = RegistryStore.open(store_url)
    try:
        yield registry.engine
    finally:
        registry.close()


def test_claim_finish_and_status(engine: Engine) -> None:
    store = EvaluationStore(engine)
    store.create(RUN, {"judges": []}, [{"inputs": "q"}], judge_count=1)
    store.create(OTHER, {"judges": []}, [{"inputs": "q"}], judge_count=1)
    store.set_status(OTHER, "completed")
    assert unfinished_runs(engine) == [(RUN, "queued", None)]
    # Two workers read the same row; one wins.
    assert claim_run(engine, RUN, "queued", None) is True
    assert claim_run(engine, RUN, "queued", None) is False
    (run_id, status, started_at) = unfinished_runs(engine)[0]
    assert (run_id, status) == (RUN, "running") and started_at is not None
    assert claim_run(engine, RUN, "running", started_at) is True  # a restart takes a run left running
    assert claim_run(engine, RUN, "running", started_at) is False
    assert finish_run(engine, RUN, "cancelled") is True
    assert finish_run(engine, RUN, "completed") is False  # a cancel is not overwritten by a late completion
    assert run_status(engine, RUN) == "cancelled" and run_status(engine, "nope") is None
    assert unfinished_runs(engine) == []
    with pytest.raises(ValueError, match="finished status"):
        finish_run(engine, RUN, "running")


def test_outcomes_in_one_batch_and_the_outline(engine: Engine) -> None:
    store = EvaluationStore(engine)
    items = [{"inputs": {"q": i}, "outputs": "x" * 1000, "prompt_name": "qa", "prompt_version": 2, "model": "m"}
             for i in range(3)]  # fmt: skip
    store.create(RUN, {"judges": []}, items, judge_count=1)
    set_item_statuses(engine, [(RUN, 0, "done", None), (RUN, 2, "error", "judge failed")])
    set_item_statuses(engine, [])
    assert [(i["status"], i["error_message"]) for i in store.items(RUN)] == [
        ("done", None), ("pending", None), ("error", "judge failed"),
    ]  # fmt: skip
    AssessmentStore(engine).insert_if_absent(
        [Assessment(id="a1", evaluation_id=RUN, item_index=0, name="j", source_type=LLM_JUDGE, value={"k": [1]},
                    score=None, label=None, rationale="long text"),
         Assessment(id="a2", evaluation_id=RUN, item_index=2, name="j", source_type=LLM_JUDGE, error_code="timeout")]
    )  # fmt: skip
    outline, assessments = run_outline(engine, RUN)
    assert outline[0] == {"item_index": 0, "status": "done", "prompt_name": "qa", "prompt_version": 2, "model": "m"}
    by_id = {a.id: a for a in assessments}
    assert by_id["a1"].value == {"k": [1]} and by_id["a1"].rationale is None  # texts left out
    assert by_id["a2"].error_code == "timeout" and by_id["a2"].item_index == 2
