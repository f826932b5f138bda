"""What ``GET /api/evaluations/{id}`` shows of a run: progress, per-item results and the aggregates, all
computed from the stored rows (items and assessments), so every worker answers the same and the figures
always equal what a query of the assessments says.

Aggregates count the judges' verdicts (source ``LLM_JUDGE``, or ``CODE`` for a code judge; human labels are
shown with their item, and compared with the judges by ``GET /api/judges/{name}/agreement``). Per judge:

- ``count``: verdicts with a value; ``errors``: error assessments (a missing field, a failed call, an
  answer that could not be parsed);
- ``mean_score``: the mean of the verdicts' scores (a boolean is 1 or 0, a number itself; labels have
  none), null when none has a score;
- ``pass_rate``: the share of boolean verdicts that are true (null when the judge gives no booleans);
- ``labels``: how many verdicts carry each label (yes/no for booleans, the categories of a categorical judge).

``by_version`` holds the same aggregates per (prompt name, prompt version, model) of the items: the prompt
version and model that produced each item's outputs (a target's call, or the stored call of a trace),
which is how two prompt versions are compared on one dataset.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from gateway.store.assessments import JUDGE_SOURCES, Assessment

_ITEM_COLUMNS: Final = ("inputs", "outputs", "expectations", "trace_id", "span_id", "prompt_name", "prompt_version",
                        "model", "status", "error_message")  # fmt: skip
_RUN_COLUMNS: Final = ("id", "status", "created_at", "started_at", "finished_at", "error_message", "item_count",
                       "judge_count")  # fmt: skip


def judge_aggregate(assessments: Iterable[Assessment]) -> dict[str, Any]:
    """The aggregate of one judge's verdicts (the module docstring says what each figure is)."""
    judged: list[Assessment] = []
    errors = 0
    for assessment in assessments:
        if assessment.error_code is not None:
            errors += 1
        else:
            judged.append(assessment)
    scores = [a.score for a in judged if a.score is not None]
    booleans = [a.value for a in judged if isinstance(a.value, bool)]
    labels = Counter(a.label for a in judged if a.label is not None)
    return {
        "count": len(judged),
        "errors": errors,
        "mean_score": math.fsum(scores) / len(scores) if scores else None,
        "pass_rate": sum(booleans) / len(booleans) if booleans else None,
        "labels": dict(sorted(labels.items())),
    }


def aggregates(
    judge_names: Sequence[str], items: Sequence[Mapping[str, Any]], assessments: Sequence[Assessment]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Per judge over the whole run, and per (prompt name, prompt version, model) of the items."""
    verdicts = [a for a in assessments if a.source_type in JUDGE_SOURCES]
    overall = {name: judge_aggregate(a for a in verdicts if a.name == name) for name in judge_names}
    group_of = {item["item_index"]: _group(item) for item in items}
    sizes = Counter(group_of.values())
    by_group: dict[tuple[Any, ...], list[Assessment]] = {group: [] for group in sizes}
    for assessment in verdicts:
        group = group_of.get(assessment.item_index)
        if group is not None:
            by_group[group].append(assessment)
    by_version = [
        {
            "prompt_name": group[0],
            "prompt_version": group[1],
            "model": group[2],
            "items": sizes[group],
            "judges": {name: judge_aggregate(a for a in found if a.name == name) for name in judge_names},
        }
        for group, found in sorted(by_group.items(), key=lambda entry: _sort_key(entry[0]))
    ]
    return overall, by_version


def progress(items: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """``done`` (items finished, with or without errors), ``errors`` (items with an error: their outputs
    could not be generated, or a judge recorded an error), ``pending`` (not finished: waiting to be queued, or
    their judge jobs on the queue) and ``total``."""
    counts = Counter(item["status"] for item in items)
    return {
        "done": counts["done"] + counts["error"],
        "errors": counts["error"],
        "pending": counts["pending"] + counts["queued"],
        "total": len(items),
    }


def run_view(
    run: Mapping[str, Any],
    items: Sequence[Mapping[str, Any]],
    assessments: Sequence[Assessment],
    *,
    include_items: bool = True,
) -> dict[str, Any]:
    """The answer of ``GET /api/evaluations/{id}``."""
    request = run["request"]
    names = [judge["name"] for judge in request.get("judges", [])]
    overall, by_version = aggregates(names, items, assessments)
    view = {column: run[column] for column in _RUN_COLUMNS}
    view.update(name=request.get("name"), judges=names, request=request, progress=progress(items),
                aggregates=overall, by_version=by_version)  # fmt: skip
    if include_items:
        by_item: dict[int, list[dict[str, Any]]] = {}
        for assessment in assessments:
            if assessment.item_index is not None:
                by_item.setdefault(assessment.item_index, []).append(assessment.to_dict())
        view["items"] = [
            {"index": item["item_index"], **{c: item[c] for c in _ITEM_COLUMNS},
             "assessments": by_item.get(item["item_index"], [])}
            for item in items
        ]  # fmt: skip
    return view


def run_summary(run: Mapping[str, Any]) -> dict[str, Any]:
    """A run as ``GET /api/evaluations`` lists it."""
    request = run["request"]
    summary = {column: run[column] for column in _RUN_COLUMNS}
    summary.update(name=request.get("name"), judges=[j["name"] for j in request.get("judges", [])],
                   source=request.get("source"), target=request.get("target"))  # fmt: skip
    return summary


def _group(item: Mapping[str, Any]) -> tuple[Any, ...]:
    return item.get("prompt_name"), item.get("prompt_version"), item.get("model")


def _sort_key(group: tuple[Any, ...]) -> tuple[Any, ...]:
    name, version, model = group
    return (name is None, name or "", version is None, version or 0, model is None, model or "")
