"""judges.agreement against scikit-learn: the same kappa and confusion matrix on the same pairs.

Random pairs of every kind, the human labels of judges/data/calibration.jsonl against a judge that
flips some of them, and the degenerate cases (no pairs, one label) where scikit-learn raises or
answers NaN.
"""

from __future__ import annotations

import json
import random
import warnings
from dataclasses import dataclass
from importlib import resources
from typing import Any

import pytest
from sklearn.metrics import cohen_kappa_score, confusion_matrix

from judges.agreement import agreement


def sklearn_figures(pairs: list[tuple[Any, Any]], weights: str | None, labels: list[Any] | None = None) -> Any:
    human, judge = [h for h, _ in pairs], [j for _, j in pairs]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kappa = cohen_kappa_score(human, judge, weights=weights, labels=labels)
    return kappa, confusion_matrix(human, judge, labels=labels).tolist()


def assert_matches_sklearn(pairs: list[tuple[Any, Any]], kind: str, labels: list[Any] | None = None) -> None:
    weights = "quadratic" if kind in ("int", "float") else None
    got = agreement(pairs, kind, labels)
    kappa, matrix = sklearn_figures(pairs, weights, labels)
    assert got["kappa"] == pytest.approx(kappa, abs=1e-12), (pairs, got)
    assert got["confusion_matrix"] == matrix
    assert got["count"] == len(pairs) and got["excluded"] == 0
    assert got["weighting"] == ("quadratic" if weights else "none")
    assert got["percent_agreement"] == pytest.approx(100 * sum(h == j for h, j in pairs) / len(pairs))
    if labels is None:
        assert got["labels"] == sorted({v for pair in pairs for v in pair})
    else:
        assert got["labels"] == labels


def assert_float_scale_matches_sklearn_on_ranks(pairs: list[tuple[float, float]]) -> None:
    """scikit-learn refuses continuous values; a float scale's distinct values are ordered labels, so its
    weighted kappa on their ranks is the figure to match."""
    values = sorted({v for pair in pairs for v in pair})
    rank = {v: i for i, v in enumerate(values)}
    got = agreement(pairs, "float")
    kappa, matrix = sklearn_figures([(rank[h], rank[j]) for h, j in pairs], "quadratic")
    assert got["kappa"] == pytest.approx(kappa, abs=1e-12) and got["confusion_matrix"] == matrix
    assert got["labels"] == values and got["weighting"] == "quadratic"


def noisy(values: list[Any], rng: random.Random, flip: float, choices: list[Any]) -> list[tuple[Any, Any]]:
    """Pairs of (human, judge) where the judge agrees except for a ``flip`` share of random answers."""
    return [(v, rng.choice(choices) if rng.random() < flip else v) for v in values]


@pytest.mark.parametrize("seed", range(20))
def test_random_pairs_of_every_kind_match_sklearn(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randint(2, 120)
    flip = rng.random()
    bools = noisy([rng.random() < 0.7 for _ in range(n)], rng, flip, [True, False])
    assert_matches_sklearn(bools, "bool")
    scale = list(range(1, 6))
    ints = noisy([rng.choice(scale) for _ in range(n)], rng, flip, scale)
    assert_matches_sklearn(ints, "int")
    assert_matches_sklearn(ints, "int", scale)  # the full scale, unseen values included
    floats = noisy([rng.choice([0.0, 0.25, 0.5, 0.75, 1.0]) for _ in range(n)], rng, flip, [0.0, 0.5, 1.0])
    assert_float_scale_matches_sklearn_on_ranks(floats)
    labels = ["good", "ok", "bad", "awful"]
    words = noisy([rng.choice(labels) for _ in range(n)], rng, flip, labels)
    assert_matches_sklearn(words, "categorical")
    assert_matches_sklearn(words, "categorical", labels)  # the caller's order, not sorted


@dataclass(frozen=True)
class Kind:
    kind: str


def fixture_items() -> list[dict[str, Any]]:
    text = resources.files("judges").joinpath("data/calibration.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize("label", ["correctness", "safety", "conciseness", "relevance_to_query"])
def test_fixture_labels_against_a_judge_that_errs_match_sklearn(label: str) -> None:
    rng = random.Random(label)
    items = fixture_items()
    # a judge that is right 85% of the time
    pairs = [(i["id"], h, h if rng.random() < 0.85 else not h) for i in items for h in [i["labels"][label]]]
    got = agreement(pairs, Kind("bool"))  # a ValueKind-like object; (target, human, judge) triples
    kappa, matrix = sklearn_figures([(h, j) for _, h, j in pairs], None)
    assert got["kappa"] == pytest.approx(kappa, abs=1e-12)
    assert got["confusion_matrix"] == matrix and got["labels"] == [False, True]
    assert got["count"] == len(items) >= 150
    assert 0 < got["kappa"] < 1


def test_a_five_point_scale_from_the_fixture_matches_sklearn_weighted_kappa() -> None:
    """Human grades derived from the labels (5 for a correct, concise, safe answer, lower for each fault)."""
    rng = random.Random(5)
    pairs = []
    for item in fixture_items():
        labels = item["labels"]
        grade = 1 + 2 * labels["correctness"] + labels["conciseness"] + labels["safety"]
        judged = min(5, max(1, grade + rng.choice([-1, 0, 0, 0, 1])))
        pairs.append((grade, judged))
    assert_matches_sklearn(pairs, "int")
    assert_matches_sklearn(pairs, "int", [1, 2, 3, 4, 5])


def test_values_are_read_as_the_kind_and_the_rest_excluded() -> None:
    got = agreement([("yes", True), ("No", 0), (1, "true"), ("maybe", True), (None, False)], "bool")
    assert got["count"] == 3 and got["excluded"] == 2
    assert got["confusion_matrix"] == [[1, 0], [0, 2]] and got["kappa"] == 1.0
    ints = agreement([(4, 4.0), ("3", 3), (2.5, 3), (True, 1), (5, 6)], "int", [1, 2, 3, 4, 5])
    assert ints["count"] == 2 and ints["excluded"] == 3  # 2.5 and a bool are no ints; 6 is off the scale
    assert ints["labels"] == [1, 2, 3, 4, 5]
    words = agreement([("good", "good"), ("bad", 3)], "categorical")
    assert words["count"] == 1 and words["excluded"] == 1


def test_no_pairs_has_no_kappa_and_says_why() -> None:
    got = agreement([], "bool")
    assert got == {
        "count": 0,
        "excluded": 0,
        "percent_agreement": None,
        "kappa": None,
        "kappa_reason": "no pairs to compare",
        "weighting": "none",
        "labels": [],
        "confusion_matrix": [],
    }
    with pytest.raises(ValueError):  # scikit-learn: no kappa either
        cohen_kappa_score([], [])
    only_excluded = agreement([("x", "y")], "int")
    assert only_excluded["count"] == 0 and only_excluded["excluded"] == 1 and only_excluded["kappa"] is None


def test_one_label_only_has_no_kappa_where_sklearn_answers_nan() -> None:
    pairs = [(True, True)] * 5
    got = agreement(pairs, "bool")
    kappa, matrix = sklearn_figures(pairs, None)
    assert kappa != kappa  # NaN
    assert got["kappa"] is None and got["kappa_reason"] and "single label" in got["kappa_reason"]
    assert got["percent_agreement"] == 100.0 and got["confusion_matrix"] == matrix == [[5]]
    # the full scale given: still one label in use by both, still undefined
    scale = agreement([(3, 3), (3, 3)], "int", [1, 2, 3, 4, 5])
    assert scale["kappa"] is None and scale["confusion_matrix"][2][2] == 2


def test_one_label_per_rater_is_defined_and_matches_sklearn() -> None:
    pairs = [(True, False)] * 3
    assert_matches_sklearn(pairs, "bool")
    assert agreement(pairs, "bool")["kappa"] == 0.0
    assert_matches_sklearn([(True, True), (True, False)], "bool")  # one rater constant: kappa 0


def test_an_unknown_kind_or_bad_labels_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown value kind 'text'"):
        agreement([(1, 1)], "text")
    with pytest.raises(ValueError, match="not all int values"):
        agreement([(1, 1)], "int", ["a", "b"])
    with pytest.raises(ValueError, match="repeat"):
        agreement([(1, 1)], "int", [1, 1, 2])
