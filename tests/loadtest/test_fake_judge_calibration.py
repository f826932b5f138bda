"""The fake judge's six built-in heuristics over the labelled fixture (judges/data/calibration.jsonl).

Documentation of what a calibration run against the fake upstream will see: the heuristics agree
with the human labels well but not perfectly (as a real judge would), and the conciseness one is the
verbosity probe: a padded correct answer never scores higher on it than its plain counterpart. Every
call goes over HTTP through the openai SDK, rendered as the built-in judges render it.

Figures when written (213 items; agreement, Cohen's kappa, [[human no: judge no, yes], [human yes: ...]]):

| judge | agreement | kappa | confusion matrix |
|---|---|---|---|
| correctness | 95.8% | 0.91 | [[83, 2], [7, 121]] |
| safety | 93.9% | 0.72 | [[20, 10], [3, 180]] (harm in other words than its lexicon passes) |
| conciseness | 99.5% | 0.99 | [[63, 1], [0, 149]] |
| relevance_to_query | 91.1% | 0.35 | [[6, 4], [15, 188]] |

relevance_to_query shows what percent agreement hides: people marked 10 answers irrelevant, the
word-overlap heuristic finds 6 of them and calls 15 relevant ones (advice phrased in other words than
the question) irrelevant. Word overlap also rewards length: a padded answer that restates more of the
question or of the expected answer is sometimes judged correct or relevant where its plain counterpart
is not (3 questions for correctness), the verbosity bias a real judge is probed for.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from importlib import resources
from typing import Any

import openai
import pytest

from judges.agreement import Agreement, agreement
from loadtest.fake_upstream import Recorder
from tests.loadtest._judge_requests import ask, fake_judge_client, prompt

LABELLED = ("correctness", "safety", "conciseness", "relevance_to_query")
GUIDELINES = "Answer in at most 40 words. Be polite and respectful."
KINDS = ("correct", "wrong", "padded", "unsafe")


def fixture_items() -> list[dict[str, Any]]:
    text = resources.files("judges").joinpath("data/calibration.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def judge_item(client: openai.OpenAI, judge: str, item: dict[str, Any]) -> bool:
    expectations = item["expectations"]
    guidelines = None
    if judge == "groundedness":  # the fixture has no retrieval context: the expected answer stands in for it
        expectations = {"context": expectations["expected_response"]}
    if judge == "guidelines":
        guidelines = GUIDELINES
    user = prompt(inputs=item["inputs"], outputs=item["outputs"], expectations=expectations, guidelines=guidelines)
    value = json.loads(ask(client, judge, user))["result"]
    assert isinstance(value, bool)
    return value


@pytest.fixture(scope="module")
def verdicts() -> Iterator[tuple[list[dict[str, Any]], dict[str, dict[str, bool]]]]:
    """Every fixture item judged by the six built-in heuristics: {judge: {item id: verdict}}."""
    items = fixture_items()
    running: tuple[openai.OpenAI, Recorder]
    with fake_judge_client() as running:
        client = running[0]
        judges = (*LABELLED, "groundedness", "guidelines")
        yield items, {judge: {item["id"]: judge_item(client, judge, item) for item in items} for judge in judges}


def figures(items: list[dict[str, Any]], judged: dict[str, bool], label: str) -> Agreement:
    return agreement([(item["id"], item["labels"][label], judged[item["id"]]) for item in items], "bool")


def pass_rate(items: list[dict[str, Any]], judged: dict[str, bool], kind: str) -> float:
    of_kind = [judged[item["id"]] for item in items if item["kind"] == kind]
    return sum(of_kind) / len(of_kind)


def test_the_fixture_is_about_200_labelled_items_of_every_kind() -> None:
    items = fixture_items()
    assert 180 <= len(items) <= 240
    assert len({item["id"] for item in items}) == len(items)
    counts = {kind: sum(item["kind"] == kind for item in items) for kind in KINDS}
    assert all(count >= 25 for count in counts.values()), counts
    for item in items:
        assert set(item) == {"id", "kind", "inputs", "outputs", "expectations", "labels"}
        assert isinstance(item["inputs"]["question"], str) and isinstance(item["outputs"], str)
        assert isinstance(item["expectations"]["expected_response"], str)
        assert set(item["labels"]) == set(LABELLED) and all(isinstance(v, bool) for v in item["labels"].values())
        kind, labels = item["kind"], item["labels"]
        assert labels["correctness"] is (kind in ("correct", "padded")) or kind == "unsafe", item["id"]
        assert labels["safety"] is (kind != "unsafe"), item["id"]
        if kind == "padded":
            assert not labels["conciseness"], item["id"]


def test_correctness_agrees_with_people_well_but_not_perfectly(verdicts: Any) -> None:
    items, judged = verdicts
    found = figures(items, judged["correctness"], "correctness")
    assert found["count"] == len(items)
    assert 70.0 < found["percent_agreement"] < 100.0, found
    assert found["kappa"] is not None and 0.6 < found["kappa"] < 1.0, found


@pytest.mark.parametrize(("label", "least_kappa"), [("safety", 0.6), ("conciseness", 0.9), ("relevance_to_query", 0.2)])
def test_the_other_labelled_judges_agree_with_people_better_than_chance(
    verdicts: Any, label: str, least_kappa: float
) -> None:
    items, judged = verdicts
    found = figures(items, judged[label], label)
    assert found["percent_agreement"] is not None and 85.0 < found["percent_agreement"] < 100.0, found
    assert found["kappa"] is not None and least_kappa < found["kappa"] < 1.0, found


def test_a_padded_answer_never_scores_higher_on_conciseness_than_its_plain_counterpart(verdicts: Any) -> None:
    items, judged = verdicts
    by_question: dict[str, dict[str, bool]] = defaultdict(dict)
    for item in items:
        by_question[item["inputs"]["question"]][item["kind"]] = judged["conciseness"][item["id"]]
    pairs = [
        (kinds["correct"], kinds["padded"]) for kinds in by_question.values() if {"correct", "padded"} <= set(kinds)
    ]
    assert len(pairs) >= 50
    assert all(padded <= plain for plain, padded in pairs)
    assert sum(plain and not padded for plain, padded in pairs) >= 0.9 * len(pairs)  # most padding is caught


def test_groundedness_in_the_expected_answer_is_strict_about_anything_added(verdicts: Any) -> None:
    items, judged = verdicts
    rates = {kind: pass_rate(items, judged["groundedness"], kind) for kind in KINDS}
    assert rates["correct"] > rates["wrong"] and rates["correct"] > rates["padded"], rates
    assert rates["padded"] < 0.1 and rates["unsafe"] < 0.1, rates  # padding and abuse are unsupported claims


def test_guidelines_on_length_and_politeness_fail_padded_and_abusive_answers(verdicts: Any) -> None:
    items, judged = verdicts
    rates = {kind: pass_rate(items, judged["guidelines"], kind) for kind in KINDS}
    assert rates["correct"] > 0.9 and rates["wrong"] > 0.9, rates
    assert rates["padded"] < 0.1 and rates["unsafe"] < 0.5, rates
