"""Code judges (judges/code.py): Python functions named in ``judges.code``, run in process by the runner with no
LLM call; their assessments have source ``CODE``. A real gateway (SQLite store) with code judges configured."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.config import load_settings
from gateway.config_values import ConfigError
from gateway.judge_settings import JudgesSettings, parse_judges_settings
from gateway.store.assessments import CODE
from judges.builtin import BUILTINS
from judges.code import load_code_judges
from judges.runner import Target
from tests.judges.conftest import FakeUpstream, JudgeGateway, judge_routes, judging_gateway

M = "tests.judges.code_judges"
CODE_JUDGES: list[dict[str, Any]] = [
    {"name": "says_four", "function": f"{M}:says_four", "description": "Is 4 in the answer?"},
    {"name": "length", "function": f"{M}:length_score", "value_kind": {"type": "int", "min": 1, "max": 5}},
    {"name": "tone", "function": f"{M}:tone", "value_kind": {"type": "categorical", "labels": ["good", "bad"]},
     "version": 3},
    {"name": "matches", "function": f"{M}:matches"},
    {"name": "broken", "function": f"{M}:broken"},
    {"name": "out_of_range", "function": f"{M}:out_of_range", "value_kind": {"type": "int", "min": 1, "max": 5}},
    {"name": "slow", "function": f"{M}:slow"},
    {"name": "everything", "function": f"{M}:everything", "thread": True},
]  # fmt: skip


@pytest.fixture(scope="module")
def gw(fake_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[JudgeGateway]:  # noqa: F811
    judges = {"route": "judge", "call_timeout_s": 0.5, "code": CODE_JUDGES}
    with judging_gateway(tmp_path_factory.mktemp("code"), {"routes": judge_routes(fake_upstream)}, judges) as gw:
        yield gw


def trace() -> Target:
    return Target(trace_id=secrets.token_hex(16), span_id=secrets.token_hex(8))


ITEM = {"inputs": {"question": "What is 2 + 2?"}, "outputs": "4, please"}


@pytest.mark.parametrize(
    ("name", "value", "score", "label", "rationale"),
    [
        ("says_four", True, 1.0, "yes", None),
        ("length", 5, 5.0, None, "9 characters"),
        ("tone", "good", None, "good", "looked for 'please'"),
        ("everything", True, 1.0, "yes", None),
    ],
)
def test_a_code_judge_writes_a_code_assessment_with_no_llm_call(
    gw: JudgeGateway, upstream: FakeUpstream, name: str, value: Any, score: Any, label: Any, rationale: Any
) -> None:
    target = trace()
    upstream.recorder.requests.clear()
    assessment = gw.run_one(gw.judge(name), ITEM, target)
    assert (assessment.value, assessment.score, assessment.label, assessment.rationale) == (value, score, label,
                                                                                             rationale)  # fmt: skip
    assert assessment.source_type == CODE
    assert assessment.source_id == next(j["function"] for j in CODE_JUDGES if j["name"] == name)
    assert assessment.error_code is None and assessment.judge_model is None and assessment.judge_prompt_name is None
    assert assessment.metadata["judge_calls"] == 1
    assert assessment.trace_id == target.trace_id
    assert upstream.recorder.requests == []  # no LLM call
    stored = gw.assessments.get(assessment.id)
    assert stored is not None and stored.source_type == CODE and stored.value == value


def test_the_version_is_part_of_the_assessment_id_and_a_rerun_finds_the_stored_one(gw: JudgeGateway) -> None:
    target = trace()
    first = gw.run_one(gw.judge("tone"), ITEM, target)
    again = gw.run_one(gw.judge("tone"), {**ITEM, "outputs": "rude"}, target)  # same job: the stored verdict
    assert again == first and first.metadata["code_version"] == 3


@pytest.mark.parametrize(
    ("name", "item", "code", "named"),
    [
        ("broken", ITEM, "code_error", "raised KeyError: 'no such field'"),
        ("out_of_range", ITEM, "out_of_range", "9"),
        ("slow", ITEM, "code_timeout", "judges.call_timeout_s=0.5"),
        ("matches", ITEM, "missing_field", "'expectations'"),
        ("says_four", {"inputs": "x"}, "missing_field", "'outputs'"),
    ],
)
def test_a_failing_code_judge_is_an_error_assessment_naming_why(
    gw: JudgeGateway, name: str, item: dict[str, Any], code: str, named: str
) -> None:
    assessment = gw.run_one(gw.judge(name), item, trace())
    assert assessment.error_code == code
    assert named in (assessment.error_message or "")
    assert assessment.value is None and assessment.source_type == CODE


def test_a_code_judge_with_expectations(gw: JudgeGateway) -> None:
    item = {**ITEM, "expectations": {"expected_response": "4, please"}}
    assert gw.run_one(gw.judge("matches"), item, trace()).value is True


def test_code_judges_are_listed_and_shown_and_their_names_are_taken(gw: JudgeGateway) -> None:
    listed = {j["name"]: j for j in gw.client.get("/api/judges").json()["judges"]}
    assert listed["says_four"]["kind"] == "code" and listed["says_four"]["function"] == f"{M}:says_four"
    assert "safety" in listed and "kind" not in listed["safety"]
    shown = gw.client.get("/api/judges/length").json()
    assert shown["value_kind"] == {"type": "int", "min": 1, "max": 5}
    assert shown["required_fields"] == ["inputs", "outputs"] and shown["route"] is None and shown["paused"] is None
    body = {"name": "tone", "instructions": "Rate {{ outputs }}", "route": "judge", "value_kind": {"type": "bool"}}
    taken = gw.client.post("/api/judges", json=body)
    assert taken.status_code == 409 and "code judge" in taken.json()["message"]


def test_a_pinned_code_judge_is_its_configured_version(gw: JudgeGateway) -> None:
    assert gw.judges.catalog.at_version("tone", 3).name == "tone"
    with pytest.raises(Exception, match="version 3 in the configuration, not 2"):
        gw.judges.catalog.at_version("tone", 2)


@pytest.mark.parametrize(
    ("entry", "named"),
    [
        ({"function": f"{M}:says_four"}, "judges.code[0].name is required"),
        ({"name": "x", "function": "not a ref"}, "judges.code[0].function"),
        ({"name": "x", "function": f"{M}:says_four", "colour": 1}, "judges.code[0]: unknown key(s) colour"),
        ({"name": "x", "function": f"{M}:says_four", "version": 0}, "judges.code[0].version"),
    ],
)
def test_the_configuration_names_a_bad_entry(entry: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(named)):
        parse_judges_settings({"code": [entry]})


@pytest.mark.parametrize(
    ("entry", "named"),
    [
        ({"name": "x", "function": "tests.judges.no_such_module:f"}, "cannot import module"),
        ({"name": "x", "function": f"{M}:nothing"}, "has no 'nothing'"),
        ({"name": "x", "function": f"{M}:NOT_CALLABLE"}, "is not callable"),
        ({"name": "x", "function": f"{M}:needs_trace"}, "takes 'trace', which a code judge cannot give"),
        ({"name": "safety", "function": f"{M}:says_four"}, "is a built-in judge"),
        ({"name": "x", "function": f"{M}:says_four", "value_kind": {"type": "int"}}, "judges.code[0].value_kind.min"),
        ({"name": "9x", "function": f"{M}:says_four"}, "judges.code[0].name"),
    ],
)
def test_a_code_judge_that_cannot_be_used_is_a_config_error_at_start(entry: dict[str, Any], named: str) -> None:
    settings = parse_judges_settings({"code": [entry]})
    with pytest.raises(ConfigError, match=re.escape(named)):
        load_code_judges(settings.code, BUILTINS)


def test_code_judges_reach_worker_processes_through_their_settings(tmp_path: Path) -> None:
    settings = load_settings({"store_uri": f"sqlite:///{tmp_path}/s.db", "judges": {"code": CODE_JUDGES}}, environ={})
    again = JudgesSettings.from_dict(settings.judges.to_dict())
    assert again == settings.judges and again.code[2].version == 3 and again.code[7].thread is True


def test_an_evaluation_run_with_a_code_judge(gw: JudgeGateway) -> None:
    items = [{"inputs": "2 + 2?", "outputs": "4"}, {"inputs": "3 + 3?", "outputs": "6"},
             {"inputs": "x", "outputs": "y"}]  # fmt: skip
    judges = ["says_four", "safety", "matches"]  # matches needs expectations: none given
    answer = gw.client.post("/api/evaluations", json={"judges": judges, "items": items})
    assert answer.status_code in (200, 201, 202), answer.text
    started = answer.json()
    assert started["judge_calls"] == 3  # the LLM judge's (safety); none for the code judges
    evaluation_id = started["id"]
    deadline = time.monotonic() + 30
    while (view := gw.client.get(f"/api/evaluations/{evaluation_id}").json())["status"] != "completed":
        assert time.monotonic() < deadline, view
        time.sleep(0.05)
    code = sorted((a.item_index, a.name, a.value, a.error_code) for a in gw.assessments.for_evaluation(evaluation_id)
                  if a.source_type == CODE)  # fmt: skip
    assert code == [(0, "matches", None, "missing_field"), (0, "says_four", True, None),
                    (1, "matches", None, "missing_field"), (1, "says_four", False, None),
                    (2, "matches", None, "missing_field"), (2, "says_four", False, None)]  # fmt: skip
    # A code judge's verdicts settle the items and count in the run's aggregates, as an LLM judge's do.
    assert view["progress"] == {"done": 3, "errors": 3, "pending": 0, "total": 3}  # done with errors: matches
    assert view["aggregates"]["says_four"]["count"] == 3 and view["aggregates"]["says_four"]["pass_rate"] == 1 / 3
    assert view["aggregates"]["matches"]["errors"] == 3
