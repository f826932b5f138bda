"""The aggregates of a run, from assessment rows: per judge, and per prompt version and model of the items."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.store.assessments import HUMAN, LLM_JUDGE, Assessment, score_and_label
from judges.evaluation_results import aggregates, judge_aggregate, progress


def verdict(index: int, name: str, value: Any, *, source: str = LLM_JUDGE, error: str | None = None) -> Assessment:
    score, label = score_and_label(value) if error is None else (None, None)
    return Assessment(id=f"{index}-{name}-{source}", evaluation_id="e", item_index=index, name=name,
                      source_type=source, value=None if error else value, score=score, label=label,
                      error_code=error)  # fmt: skip


def item(index: int, version: int | None, status: str = "done") -> dict[str, Any]:
    return {"item_index": index, "prompt_name": "qa" if version else None, "prompt_version": version,
            "model": "m" if version else None, "status": status}  # fmt: skip


def test_judge_aggregate_booleans_numbers_labels_errors() -> None:
    booleans = judge_aggregate([verdict(0, "j", True), verdict(1, "j", False), verdict(2, "j", True),
                                verdict(3, "j", None, error="timeout")])  # fmt: skip
    assert booleans == {"count": 3, "errors": 1, "mean_score": pytest.approx(2 / 3), "pass_rate": pytest.approx(2 / 3),
                        "labels": {"no": 1, "yes": 2}}  # fmt: skip
    scale = judge_aggregate([verdict(0, "s", 4), verdict(1, "s", 5), verdict(2, "s", 1)])
    assert scale["mean_score"] == pytest.approx(10 / 3) and scale["pass_rate"] is None and scale["labels"] == {}
    labels = judge_aggregate([verdict(0, "c", "good"), verdict(1, "c", "bad"), verdict(2, "c", "good")])
    assert labels["mean_score"] is None and labels["labels"] == {"bad": 1, "good": 2}
    assert judge_aggregate([]) == {"count": 0, "errors": 0, "mean_score": None, "pass_rate": None, "labels": {}}


def test_aggregates_per_version_leave_human_labels_out() -> None:
    items = [item(0, 1), item(1, 1), item(2, 2), item(3, 2, "error")]
    rows = [verdict(0, "j", True), verdict(1, "j", False), verdict(2, "j", True), verdict(3, "j", None, error="x"),
            verdict(0, "j", False, source=HUMAN)]  # fmt: skip
    overall, by_version = aggregates(["j", "other"], items, rows)
    assert overall["j"]["count"] == 3 and overall["j"]["errors"] == 1
    assert overall["other"]["count"] == 0
    assert [(g["prompt_version"], g["items"], g["judges"]["j"]["pass_rate"]) for g in by_version] == [
        (1, 2, 0.5),
        (2, 2, 1.0),
    ]
    assert by_version[1]["judges"]["j"]["errors"] == 1
    assert progress(items) == {"done": 4, "errors": 1, "pending": 0, "total": 4}
