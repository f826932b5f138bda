"""The evaluation queue's store functions on SQLite and PostgreSQL: the runs whose lease expired and claiming
one (one winner), a live owner's lease (renewed, kept, taken once expired, released), finishing only an
unfinished run, item outcomes in one batch, a run's outline."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.engine import Engine

from gateway.store.assessments import LLM_JUDGE, Assessment, AssessmentStore, now_ms
from gateway.store.evaluation_runs import (
    Claimable,
    Lease,
    claim_run,
    claimable_runs,
    finish_run,
    release_leases,
    renew_leases,
    run_outline,
    run_status,
    set_item_statuses,
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
    never_owned = Lease(None, None)
    assert claimable_runs(engine, now_ms()) == [Claimable(RUN, "queued", None, never_owned)]
    # Two workers read the same row; one wins.
    assert claim_run(engine, RUN, "queued", None, owner="a", lease=never_owned) is True
    assert claim_run(engine, RUN, "queued", None, owner="b", lease=never_owned) is False
    assert claimable_runs(engine, now_ms() - 60_000) == []  # "a" holds it: its heartbeat is recent
    (found,) = claimable_runs(engine, now_ms() + 1)  # a's lease expired
    assert (found.id, found.status, found.lease.owner) == (RUN, "running", "a") and found.started_at is not None
    assert claim_run(engine, RUN, "running", found.started_at, owner="b", lease=found.lease) is True  # taken over
    assert claim_run(engine, RUN, "running", found.started_at, owner="c", lease=found.lease) is False
    assert finish_run(engine, RUN, "cancelled") is True
    assert finish_run(engine, RUN, "completed") is False  # a cancel is not overwritten by a late completion
    assert run_status(engine, RUN) == "cancelled" and run_status(engine, "nope") is None
    assert claimable_runs(engine, now_ms() + 1) == []
    with pytest.raises(ValueError, match="finished status"):
        finish_run(engine, RUN, "running")


def test_a_live_owner_keeps_its_lease_and_loses_it_once_expired(engine: Engine) -> None:
    store = EvaluationStore(engine)
    store.create(RUN, {"judges": []}, [{"inputs": "q"}], judge_count=1, owner="a")  # held from the insert
    store.create(OTHER, {"judges": []}, [{"inputs": "q"}], judge_count=1, owner="a")
    row = store.get(RUN)
    assert row is not None and row["owner"] == "a" and row["heartbeat_at"] == row["created_at"]
    assert claimable_runs(engine, row["created_at"]) == []  # a's heartbeat is not older than that
    assert claim_run(engine, RUN, "queued", None, owner="b", lease=None) is False  # only its creator starts it so
    assert claim_run(engine, RUN, "queued", None, owner="a", lease=None) is True
    assert renew_leases(engine, "a", [RUN, OTHER]) == {} and renew_leases(engine, "a", []) == {}
    # a stalls past the lease timeout (every heartbeat before now + 1 ms expired): b reads both runs as a's.
    expired = {c.id: c for c in claimable_runs(engine, now_ms() + 1)}
    assert {c.lease.owner for c in expired.values()} == {"a"}
    # b takes RUN, a compare-and-set on a's lease as read; a renews OTHER before b's claim of it: a keeps OTHER.
    assert claim_run(engine, RUN, "running", expired[RUN].started_at, owner="b", lease=expired[RUN].lease) is True
    while now_ms() <= (expired[OTHER].lease.heartbeat_at or 0):  # the renewal writes a later heartbeat
        pass
    assert renew_leases(engine, "a", [RUN, OTHER, "gone"]) == {RUN: "b"}  # a learns RUN was taken, by whom
    assert claim_run(engine, OTHER, "queued", None, owner="b", lease=expired[OTHER].lease) is False
    # b stops cleanly: its unfinished run released, anyone's to take at once; a's left alone.
    assert release_leases(engine, "b") == 1
    (released,) = claimable_runs(engine, 0)
    assert (released.id, released.status, released.lease) == (RUN, "running", Lease(None, None))


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
