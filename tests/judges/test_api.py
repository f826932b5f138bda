"""``/api/judges`` on a real gateway: the seeded built-ins, custom judges (created, edited as new prompt
versions, refused with the field named), and agreement with human feedback equal to scikit-learn's."""

from __future__ import annotations

import secrets
from typing import Any

import httpx
import pytest
from opentelemetry.trace import SpanKind
from sklearn.metrics import cohen_kappa_score, confusion_matrix

from judges.runner import Target
from tests.judges.conftest import JudgeGateway, wait_until

BUILTIN_NAMES = ["conciseness", "correctness", "groundedness", "guidelines", "relevance_to_query", "safety"]
INSTRUCTIONS = "Does {{ outputs }} answer {{ inputs }}?"


def create(gw: JudgeGateway, **fields: Any) -> httpx.Response:
    body = {"name": f"j_{secrets.token_hex(4)}", "instructions": INSTRUCTIONS, "route": "judge",
            "value_kind": {"type": "bool"}, **fields}  # fmt: skip
    return gw.client.post("/api/judges", json=body)


def test_the_builtins_are_seeded_as_prompts_at_production(gw: JudgeGateway) -> None:
    listed = {j["name"]: j for j in gw.client.get("/api/judges").json()["judges"]}
    assert set(BUILTIN_NAMES) <= set(listed)
    correctness = gw.client.get("/api/judges/correctness").json()
    assert correctness.pop("paused") is None  # the judge queue's pause, shown by GET /api/judges/{name} only
    assert correctness == listed["correctness"]
    assert correctness["builtin"] is True and correctness["route"] == "judge"  # judges.route
    assert (correctness["prompt_name"], correctness["prompt_version"]) == ("judges.correctness", 1)
    assert correctness["value_kind"] == {"type": "bool"}
    assert correctness["required_fields"] == [
        "inputs",
        "outputs",
        "expectations.expected_response | expectations.expected_facts",
    ]
    assert "<expectations>\n{{ expectations }}\n</expectations>" in correctness["instructions"]
    assert gw.client.get("/api/judges/groundedness").json()["required_fields"] == ["outputs", "expectations.context"]
    prompt = gw.client.get("/api/prompts/judges.safety@production").json()
    assert prompt["version"] == 1 and prompt["tags"]["judge.kind"] == "builtin"
    assert prompt["response_format"]["json_schema"]["name"] == "judge_safety"


def test_a_custom_judge_is_a_prompt_version_and_editing_it_is_a_new_one(gw: JudgeGateway) -> None:
    name = f"tone_{secrets.token_hex(4)}"
    answer = create(gw, name=name, value_kind={"type": "int", "min": 1, "max": 5}, description="Politeness")
    assert answer.status_code == 201, answer.text
    judge = answer.json()
    assert judge == {
        "name": name,
        "description": "Politeness",
        "builtin": False,
        "prompt_name": f"judges.{name}",
        "prompt_version": 1,
        "route": "judge",
        "value_kind": {"type": "int", "min": 1, "max": 5},
        "required_fields": ["inputs", "outputs"],
        "instructions": INSTRUCTIONS,
    }
    assert gw.client.get(f"/api/judges/{name}").json() == {**judge, "paused": None}  # and the queue's pause
    edited = create(gw, name=name, instructions="Is {{ outputs }} polite?", value_kind={"type": "bool"})
    assert edited.status_code == 201
    assert (edited.json()["prompt_version"], edited.json()["required_fields"]) == (2, ["outputs"])
    assert gw.client.get(f"/api/judges/{name}").json()["prompt_version"] == 2
    version = gw.client.get(f"/api/prompts/judges.{name}@production").json()
    assert version["version"] == 2 and version["model_config"] == {"model_name": "judge", "temperature": 0}
    assert version["tags"]["judge.value_kind"] == '{"type": "bool"}'


@pytest.mark.parametrize(
    ("fields", "status", "named"),
    [
        ({"instructions": "Is {{ outputs }} in {{ context }}?"}, 400, "'context'"),
        ({"instructions": "Is it good?"}, 400, "uses no variable"),
        ({"route": "nowhere"}, 400, "'nowhere' is not an LLM route of this gateway"),
        ({"value_kind": {"type": "int", "min": 1}}, 400, "'value_kind.max' is required"),
        ({"name": "judges.x"}, 400, "Field 'name'"),
        ({"name": "correctness"}, 409, "built-in judge"),
        ({"temperature": 0}, 400, "Unknown field(s) temperature"),
    ],
)
def test_a_bad_judge_is_refused_naming_what_is_wrong(
    gw: JudgeGateway, fields: dict[str, Any], status: int, named: str
) -> None:
    answer = create(gw, **fields)
    assert answer.status_code == status and named in answer.json()["message"], answer.text


def test_lookups_name_what_is_missing(gw: JudgeGateway) -> None:
    missing = gw.client.get("/api/judges/nope")
    assert missing.status_code == 404 and "No judge 'nope' (judges: " in missing.json()["message"]
    assert gw.client.get("/api/judges/not%20a%20name").status_code == 400
    assert gw.client.get("/api/judges?x=1").status_code == 400
    # A prompt judges.<name> edited by hand into something that is not a judge: listed with its problem, 409.
    name = f"broken_{secrets.token_hex(4)}"
    written = gw.client.post(
        f"/api/prompts/judges.{name}/versions", json={"template": [{"role": "user", "content": "{{ outputs }}"}]}
    )
    assert written.status_code == 201, written.text
    listed = {j["name"]: j for j in gw.client.get("/api/judges").json()["judges"]}
    assert "chat template" in listed[name]["problem"]
    answer = gw.client.get(f"/api/judges/{name}")
    assert answer.status_code == 409 and answer.json()["error_code"] == "INVALID_STATE"


def _client_calls(gw: JudgeGateway, count: int) -> list[Target]:
    """``count`` proxied calls: the SERVER span of each, as a judge target."""
    targets = []
    for number in range(count):
        gw.exporter.clear()
        body = {"model": "judge", "messages": [{"role": "user", "content": f"question {number}"}]}
        assert httpx.post(gw.v1 + "/chat/completions", json=body, timeout=30).status_code == 200
        spans = gw.wait_spans(lambda spans: any(s.kind is SpanKind.SERVER for s in spans))
        context = next(s for s in spans if s.kind is SpanKind.SERVER).context
        assert context is not None
        targets.append(Target(format(context.trace_id, "032x"), format(context.span_id, "016x")))
    return targets


def test_agreement_with_human_feedback_equals_scikit_learn(gw: JudgeGateway) -> None:
    name = f"helpful_{secrets.token_hex(4)}"
    assert create(gw, name=name, value_kind={"type": "int", "min": 1, "max": 5}).status_code == 201
    judge = gw.judge(name)
    humans = [5, 4, 2, 1, 3, 5, 2]
    verdicts = [5, 5, 2, 2, 3, 4, 1]
    targets = _client_calls(gw, len(humans))
    jobs = [
        (judge, {"inputs": f"[[verdict.{name}={verdict}]]", "outputs": "an answer"}, target, None)
        for target, verdict in zip(targets, verdicts, strict=True)
    ]
    assert [a.value for a in gw.run_many(jobs)] == verdicts
    for target, human in zip(targets, humans, strict=True):
        wait_until(lambda t=target: gw.client.get(f"/api/traces/{t.trace_id}").status_code == 200,  # type: ignore[misc]
                   what="the trace in the store")  # fmt: skip
        feedback = {"name": name, "value": human, "span_id": target.span_id, "source_id": "ann"}
        answer = gw.client.post(f"/api/traces/{target.trace_id}/assessments", json=feedback)
        assert answer.status_code == 201, answer.text

    figures = gw.client.get(f"/api/judges/{name}/agreement").json()

    assert figures["count"] == len(humans) and figures["weighting"] == "quadratic"
    assert figures["percent_agreement"] == pytest.approx(100 * 3 / 7)
    assert figures["kappa"] == pytest.approx(cohen_kappa_score(humans, verdicts, weights="quadratic"))
    assert figures["labels"] == [1, 2, 3, 4, 5]
    assert figures["confusion_matrix"] == confusion_matrix(humans, verdicts, labels=[1, 2, 3, 4, 5]).tolist()
    assert (figures["prompt_name"], figures["prompt_version"]) == (f"judges.{name}", 1)
