"""AssessmentStore on SQLite and PostgreSQL: deterministic ids, insert-if-absent (also under a race),
human feedback replaced by its author, reads by trace and by run, and the HUMAN/LLM_JUDGE pairs."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import sqlalchemy as sa

from gateway.store import schema
from gateway.store.assessments import (
    HUMAN,
    LLM_JUDGE,
    Assessment,
    AssessmentStore,
    assessment_id,
    item_target,
    score_and_label,
    trace_target,
)
from gateway.store.registry import RegistryStore

TRACE = "ab" * 16
SPAN = "cd" * 8
WAIT_S = 120  # only a guard against a hang


@pytest.fixture
def store(store_url: str) -> Iterator[AssessmentStore]:
    registry = RegistryStore.open(store_url)  # migrates: assessments is migration 4
    try:
        yield AssessmentStore(registry.engine)
    finally:
        registry.close()


def judged(
    value: Any,
    *,
    name: str = "correctness",
    trace_id: str | None = TRACE,
    span_id: str | None = SPAN,
    evaluation_id: str | None = None,
    item_index: int | None = None,
    version: int = 1,
    created_at: int = 1000,
    **values: Any,
) -> Assessment:
    """An LLM_JUDGE assessment of a trace span (or, with trace_id None, of an evaluation item)."""
    target = trace_target(trace_id, span_id) if trace_id else item_target(str(evaluation_id), item_index or 0)
    score, label = score_and_label(value)
    return Assessment(
        id=assessment_id(target=target, judge_name=name, judge_version=version, evaluation_id=evaluation_id),
        trace_id=trace_id,
        span_id=span_id,
        evaluation_id=evaluation_id,
        item_index=item_index,
        name=name,
        source_type=values.pop("source_type", LLM_JUDGE),
        value=value,
        score=score,
        label=label,
        created_at=created_at,
        **values,
    )


def human(
    value: Any, source_id: str, *, name: str = "correctness", span_id: str | None = SPAN, **values: Any
) -> Assessment:
    target = trace_target(TRACE, span_id)
    score, label = score_and_label(value)
    return Assessment(
        id=assessment_id(target=target, judge_name=name, judge_version=f"human:{source_id}", evaluation_id=None),
        trace_id=TRACE,
        span_id=span_id,
        name=name,
        source_type=HUMAN,
        source_id=source_id,
        value=value,
        score=score,
        label=label,
        **values,
    )


def _rows(store: AssessmentStore) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM assessments")).scalar_one())


def test_the_dataclass_has_every_column_in_order() -> None:
    assert [f.name for f in dataclasses.fields(Assessment)] == [c.name for c in schema.assessments.columns]


def test_ids_are_deterministic_per_target_judge_version_and_run() -> None:
    target = trace_target(TRACE.upper(), SPAN)
    one = assessment_id(target=target, judge_name="safety", judge_version=3, evaluation_id=None)
    assert one == assessment_id(
        target=trace_target(TRACE, SPAN), judge_name="safety", judge_version="3", evaluation_id=None
    )
    assert len(one) == 36
    others = {
        assessment_id(target=target, judge_name="safety", judge_version=4, evaluation_id=None),
        assessment_id(target=target, judge_name="conciseness", judge_version=3, evaluation_id=None),
        assessment_id(target=target, judge_name="safety", judge_version=3, evaluation_id="run-1"),
        assessment_id(target=trace_target(TRACE, None), judge_name="safety", judge_version=3, evaluation_id=None),
        assessment_id(target=item_target("run-1", 0), judge_name="safety", judge_version=3, evaluation_id="run-1"),
    }
    assert one not in others and len(others) == 5
    assert assessment_id(target=target, judge_name="safety", judge_version=3, evaluation_id="online") == one


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, (1.0, "yes")),
        (False, (0.0, "no")),
        (4, (4.0, None)),
        (0.25, (0.25, None)),
        ("good", (None, "good")),
        ("x" * 300, (None, "x" * 255)),
        (10**400, (None, None)),
        (float("nan"), (None, None)),
        (None, (None, None)),
        ([1, 2], (None, None)),
        ({"a": 1}, (None, None)),
    ],
)
def test_score_and_label(value: Any, expected: tuple[float | None, str | None]) -> None:
    assert score_and_label(value) == expected


def test_insert_if_absent_twice_leaves_one_row_and_round_trips(store: AssessmentStore) -> None:
    first = judged(
        True,
        rationale="Matches the expected answer.",
        judge_prompt_name="judges.correctness",
        judge_prompt_version=1,
        judge_model="fake-judge",
        judge_trace_id="ef" * 16,
        input_tokens=120,
        output_tokens=14,
        cost_usd=0.00042,
        latency_ms=12.5,
        attempts=2,
        metadata={"route": "judge", "nested": [1, {"a": None}]},
    )
    assert store.insert_if_absent([first]) == 1
    assert store.insert_if_absent([first]) == 0  # a retried job: nothing written, no error
    assert store.insert_if_absent([first, first]) == 0
    assert store.insert_if_absent([]) == 0
    assert _rows(store) == 1
    assert store.exists(first.id) and not store.exists(judged(False, version=2).id)
    (stored,) = store.for_trace(TRACE.upper())
    assert stored == first
    assert stored.to_dict()["value"] is True and stored.to_dict()["metadata"] == first.metadata
    assert list(stored.to_dict())[:3] == ["id", "trace_id", "span_id"]


def test_a_batch_inserts_only_the_new_ids(store: AssessmentStore) -> None:
    old = judged(1, name="a")
    store.insert_if_absent([old])
    batch = [old, judged(2, name="b"), judged(3, name="c"), judged(3, name="c")]
    assert store.insert_if_absent(batch) == 2
    assert _rows(store) == 3
    assert store.get(old.id) == old and store.get("nope") is None


def test_concurrent_inserts_of_one_id_leave_one_row(store_url: str, store: AssessmentStore) -> None:
    threads = 8
    start = threading.Barrier(threads)
    verdict = judged("good", evaluation_id="run-1")

    def insert() -> int:
        own = RegistryStore.open(store_url)  # its own engine, as another replica would have
        try:
            start.wait(WAIT_S)
            return AssessmentStore(own.engine).insert_if_absent([verdict])
        finally:
            own.close()

    with ThreadPoolExecutor(threads) as pool:
        inserted = [f.result(timeout=WAIT_S) for f in [pool.submit(insert) for _ in range(threads)]]
    assert sorted(inserted) == [0] * (threads - 1) + [1]
    assert _rows(store) == 1


def test_error_assessment_keeps_no_value(store: AssessmentStore) -> None:
    failed = judged(None, error_code="MISSING_INPUT", error_message="correctness needs expectations")
    store.insert_if_absent([failed])
    (stored,) = store.for_trace(TRACE)
    assert stored.value is None and stored.score is None and stored.is_error
    assert stored.error_message == "correctness needs expectations"


def test_long_bounded_text_is_cut_to_its_column(store: AssessmentStore) -> None:
    long = judged("y" * 300, judge_model="m" * 400, error_code="E" * 100)
    store.insert_if_absent([long])
    (stored,) = store.for_trace(TRACE)
    assert stored.value == "y" * 300  # the value keeps everything
    assert stored.label == "y" * 255 and stored.judge_model == "m" * 255 and stored.error_code == "E" * 64


def test_upsert_human_replaces_the_same_author_and_adds_another(store: AssessmentStore) -> None:
    first = store.upsert_human(human(True, "alice", rationale="fine", created_at=1000))
    assert first.score == 1.0 and first.label == "yes" and first.source_type == HUMAN
    again = store.upsert_human(human(False, "alice", rationale="on reflection, wrong", created_at=2000))
    assert again.id == first.id and again.value is False and again.label == "no" and again.created_at == 2000
    assert again.rationale == "on reflection, wrong"
    store.upsert_human(human("partly", "bob", created_at=3000))
    assert _rows(store) == 2
    assert [(a.source_id, a.value) for a in store.for_trace(TRACE)] == [("alice", False), ("bob", "partly")]


def test_for_evaluation_count_and_order(store: AssessmentStore) -> None:
    run = "11111111-2222-3333-4444-555555555555"
    rows = [
        judged(True, name="safety", trace_id=None, evaluation_id=run, item_index=1, created_at=5),
        judged(True, name="correctness", trace_id=None, evaluation_id=run, item_index=1, created_at=6),
        judged(False, name="safety", trace_id=None, evaluation_id=run, item_index=0, created_at=7),
        judged(True, name="safety", trace_id=None, evaluation_id="other", item_index=0),
        judged(True, name="safety"),
    ]
    assert store.insert_if_absent(rows) == 5
    assert [(a.item_index, a.name) for a in store.for_evaluation(run)] == [
        (0, "safety"),
        (1, "correctness"),
        (1, "safety"),
    ]
    assert store.count() == 5
    assert store.count(evaluation_id=run) == 3
    assert store.count(name="safety") == 4
    assert store.count(evaluation_id=run, name="safety") == 2
    assert store.count(evaluation_id="none") == 0


def test_pairs_keep_targets_with_both_kinds_newest_of_each(store: AssessmentStore) -> None:
    other_span = "ee" * 8
    run = "run-1"
    store.insert_if_absent(
        [
            # span SPAN: two judge verdicts (online v1 older, a run's v2 newer) -> the newer one counts
            judged(False, version=1, created_at=100),
            judged(True, version=2, evaluation_id=run, created_at=200),
            # other_span: an error verdict and (below) a human label: no pair
            judged(None, span_id=other_span, error_code="PARSE_ERROR", created_at=100),
            # an evaluation item (no trace) with both kinds
            judged(4, trace_id=None, evaluation_id=run, item_index=3, created_at=100),
            judged(5, trace_id=None, evaluation_id=run, item_index=3, version=0, created_at=300, source_type=HUMAN),
            # an item with a judge verdict only
            judged(2, trace_id=None, evaluation_id=run, item_index=4),
            # another judge's name on the same span
            judged(True, name="safety", created_at=100),
        ]
    )
    store.upsert_human(human(True, "alice", created_at=150))
    store.upsert_human(human(False, "bob", created_at=250))  # newest human label of SPAN
    store.upsert_human(human(True, "alice", span_id=other_span))
    store.upsert_human(human(True, "alice", name="safety", span_id=None))  # the trace as a whole: another target
    assert store.pairs("correctness") == sorted([(trace_target(TRACE, SPAN), False, True), (item_target(run, 3), 5, 4)])
    assert store.pairs("safety") == []
    assert store.pairs("nothing") == []


def test_insert_new_tells_each_row_apart_and_a_bad_row_fails_alone(store: AssessmentStore) -> None:
    stored = judged(True, name="stored")
    assert store.insert_new([stored]) == [True]
    fresh = judged(False, name="fresh")
    unencodable = judged(True, name="unencodable", metadata={"x": object()})
    refused = dataclasses.replace(judged(True, name="refused"), name=None)  # type: ignore[arg-type]
    again = dataclasses.replace(fresh, value=True)  # the same id later in the batch
    answers = store.insert_new([fresh, unencodable, refused, again, stored, judged(1, name="other")])
    assert answers[0] is True and answers[3] is False and answers[4] is False and answers[5] is True
    assert isinstance(answers[1], TypeError)
    assert isinstance(answers[2], sa.exc.IntegrityError)
    found = store.get_many([fresh.id, stored.id, refused.id, "no-such-id"])
    assert set(found) == {fresh.id, stored.id} and found[fresh.id].value is False  # the first of the id
    assert store.insert_new([]) == [] and store.get_many([]) == {}
