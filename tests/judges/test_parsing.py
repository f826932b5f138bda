"""Reading a judge's answer (judges/parsing.py): what is tolerated, and what is a problem named for the repair."""

from __future__ import annotations

from typing import Any

import pytest

from judges.definitions import BOOL, ValueKind
from judges.parsing import ParseProblem, Verdict, parse_verdict

SCALE = ValueKind.from_dict({"type": "int", "min": 1, "max": 5})
SHARE = ValueKind.from_dict({"type": "float", "min": 0, "max": 1})
LABELS = ValueKind.from_dict({"type": "categorical", "labels": ["good", "ok", "bad"]})


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ('{"rationale": "fine", "result": true}', BOOL, True),
        ('```json\n{"rationale": "fine", "result": false}\n```', BOOL, False),
        ('Sure! Here is my verdict:\n```\n{"rationale": "fine", "result": 4}\n```\nHope it helps.', SCALE, 4),
        ('Let me think step by step. {"rationale": "fine", "result": 3} That is all.', SCALE, 3),
        ('I weigh {"a": 1} first, then: {"rationale": "fine", "result": 2}', SCALE, 2),
        ('{"rationale": "fine", "result": "Yes"}', BOOL, True),
        ('{"rationale": "fine", "result": "no."}', BOOL, False),
        ('{"rationale": "fine", "result": 1}', BOOL, True),
        ('{"rationale": "fine", "result": "4"}', SCALE, 4),
        ('{"rationale": "fine", "result": 4.0}', SCALE, 4),
        ('{"rationale": "fine", "result": "0.25"}', SHARE, 0.25),
        ('{"rationale": "fine", "result": "Good"}', LABELS, "good"),
        ('{"rationale": "fine", "score": 5}', SCALE, 5),
        ("Yes", BOOL, True),
        ("4", SCALE, 4),
        ("bad", LABELS, "bad"),
    ],
)
def test_tolerated_answers_give_the_value(text: str, kind: ValueKind, value: Any) -> None:
    verdict = parse_verdict(text, kind)
    assert isinstance(verdict, Verdict), verdict
    assert verdict.value == value and type(verdict.value) is type(value)
    if "rationale" in text:
        assert verdict.rationale == "fine"


@pytest.mark.parametrize(
    ("text", "kind", "code", "named"),
    [
        ("", BOOL, "empty_answer", "empty"),
        ("I would rather explain my view in prose.", BOOL, "no_json", "no JSON object"),
        ('{"rationale": "fine"}', BOOL, "no_result", "no 'result' key (its keys: rationale)"),
        ('{"rationale": "fine", "result": [true]}', BOOL, "wrong_type", "true or false, got a list"),
        ('{"rationale": "fine", "result": 2}', BOOL, "out_of_range", "got the number 2"),
        ('{"rationale": "fine", "result": "maybe"}', BOOL, "wrong_type", "'maybe'"),
        ('{"rationale": "fine", "result": 6}', SCALE, "out_of_range", "an integer from 1 to 5, got 6"),
        ('{"rationale": "fine", "result": 3.5}', SCALE, "wrong_type", "not whole"),
        ('{"rationale": "fine", "result": "four"}', SCALE, "wrong_type", "'four'"),
        ('{"rationale": "fine", "result": 1.5}', SHARE, "out_of_range", "a number from 0 to 1"),
        ('{"rationale": "fine", "result": "great"}', LABELS, "out_of_range", 'one of "good", "ok", "bad"'),
        ('{"rationale": "fine", "result": 1}', LABELS, "wrong_type", "got int 1"),
        ('{"rationale": "fine", "result": null}', SCALE, "wrong_type", "got null"),
    ],
)
def test_problems_are_named(text: str, kind: ValueKind, code: str, named: str) -> None:
    problem = parse_verdict(text, kind)
    assert isinstance(problem, ParseProblem), problem
    assert problem.code == code and named in problem.message, problem
