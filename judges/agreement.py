"""How well a judge agrees with people: percent agreement, Cohen's kappa and the confusion matrix.

Percent agreement alone flatters a judge that says "yes" to nearly everything when nearly everything
is good; Cohen's kappa discounts the agreement two raters would reach by chance from their own label
frequencies (Thakur et al., arXiv:2406.12624: report kappa, weighted for ordinal scales). For bool and
categorical judges every disagreement weighs the same (unweighted kappa); for int and float scales a
disagreement weighs the square of its distance in label positions (quadratic-weighted kappa), so
saying 4 where a person said 5 costs far less than saying 1.

The figures equal scikit-learn's ``cohen_kappa_score`` (``weights="quadratic"`` for scales) and
``confusion_matrix`` on the same pairs and labels (tests/judges/test_agreement.py checks it), computed
here in plain Python: scikit-learn is a development dependency only. A float scale's distinct values
are its ordered labels (scikit-learn refuses continuous values; its figures on their ranks are ours).
Where scikit-learn's kappa is undefined (it raises on no pairs, and answers NaN when the two raters
share a single label between them) the kappa is None and ``kappa_reason`` says why.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, Protocol, TypedDict

KINDS = ("bool", "int", "float", "categorical")
_YES = frozenset(("yes", "true", "pass"))
_NO = frozenset(("no", "false", "fail"))


class HasKind(Protocol):
    """A judge's value kind (judges.definitions.ValueKind) or anything else with its ``kind``."""

    @property
    def kind(self) -> str: ...


class Agreement(TypedDict):
    count: int  # pairs compared
    excluded: int  # pairs left out: a value not of the kind, or not among ``labels``
    percent_agreement: float | None  # 0-100, exact matches; None without pairs
    kappa: float | None
    kappa_reason: str | None  # why kappa is None
    weighting: str  # "none" | "quadratic"
    labels: list[Any]  # the order of the matrix's rows and columns
    confusion_matrix: list[list[int]]  # rows: the human's label, columns: the judge's


def agreement(pairs: Iterable[Sequence[Any]], kind: str | HasKind, labels: Sequence[Any] | None = None) -> Agreement:
    """Agreement between people and a judge over ``pairs``: ``(human, judge)`` or ``(target, human, judge)``.

    The last two items of each pair are used, so ``AssessmentStore.pairs(name)`` can be passed as is.
    Values are read as ``kind`` ("bool", "int", "float" or "categorical"; or a ValueKind): a bool also
    from "yes"/"no", "true"/"false", "pass"/"fail" and 0/1, an int from an integral float or a digit
    string, a float from any number; a pair with a value that is not of the kind is left out and
    counted in ``excluded``. ``labels`` default to every value seen, sorted (scikit-learn's default);
    give a scale's full range (``range(1, 6)``) to weigh distances on the whole scale: a value outside
    the labels is then left out, as scikit-learn leaves it out.
    """
    kind_name = kind if isinstance(kind, str) else kind.kind
    if kind_name not in KINDS:
        raise ValueError(f"unknown value kind {kind_name!r}: one of {', '.join(KINDS)}")
    weighting = "quadratic" if kind_name in ("int", "float") else "none"
    read: list[tuple[Any, Any]] = []
    excluded = 0
    for pair in pairs:
        human, judge = _value(pair[-2], kind_name), _value(pair[-1], kind_name)
        if human is None or judge is None:
            excluded += 1
        else:
            read.append((human, judge))
    if labels is None:
        order = sorted({v for pair in read for v in pair})
    else:
        order = [_value(label, kind_name) for label in labels]
        if any(label is None for label in order):
            raise ValueError(f"labels {list(labels)!r} are not all {kind_name} values")
        if len(set(order)) != len(order):
            raise ValueError(f"labels {list(labels)!r} repeat a value")
    index = {label: i for i, label in enumerate(order)}
    kept = [(h, j) for h, j in read if h in index and j in index]
    excluded += len(read) - len(kept)
    matrix = [[0] * len(order) for _ in order]
    for human, judge in kept:
        matrix[index[human]][index[judge]] += 1
    result = Agreement(
        count=len(kept),
        excluded=excluded,
        percent_agreement=None,
        kappa=None,
        kappa_reason=None,
        weighting=weighting,
        labels=list(order),
        confusion_matrix=matrix,
    )
    if not kept:
        result["kappa_reason"] = "no pairs to compare"
        return result
    result["percent_agreement"] = 100.0 * sum(matrix[i][i] for i in range(len(order))) / len(kept)
    result["kappa"] = _kappa(matrix, quadratic=weighting == "quadratic")
    if result["kappa"] is None:
        result["kappa_reason"] = "undefined: the human and the judge use a single label between them"
    return result


def _kappa(matrix: list[list[int]], *, quadratic: bool) -> float | None:
    """Cohen's kappa of a confusion matrix, computed as scikit-learn computes it; None where it answers NaN."""
    n = len(matrix)
    total = sum(map(sum, matrix))
    rows = [sum(row) for row in matrix]
    columns = [sum(matrix[i][j] for i in range(n)) for j in range(n)]

    def weight(i: int, j: int) -> float:
        return float((i - j) ** 2) if quadratic else float(i != j)

    observed = math.fsum(weight(i, j) * matrix[i][j] for i in range(n) for j in range(n))
    expected = math.fsum(weight(i, j) * rows[i] * columns[j] / total for i in range(n) for j in range(n))
    if expected == 0:
        return None
    return 1.0 - observed / expected


def _value(value: Any, kind: str) -> Any:
    """``value`` read as ``kind``, or None when it is not one."""
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, int | float) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _YES | _NO:
            return value.strip().lower() in _YES
        return None
    if kind == "categorical":
        return value if isinstance(value, str) else None
    if isinstance(value, bool):
        return None
    if kind == "int" and isinstance(value, int):
        return value
    number: float
    if isinstance(value, int | float):
        number = value
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    if not math.isfinite(number):
        return None
    if kind == "int":
        return int(number) if float(number).is_integer() else None
    return float(number)
