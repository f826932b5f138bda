"""Evaluation runs over HTTP against a real gateway (uvicorn on loopback, SQLite) and the fake upstream's judge
mode: items with outputs, outputs generated through a route and a prompt version, stored traces by id and by
filter (capped), dry runs, cancel, human labels, aggregates equal to the stored assessments, and a restart
that resumes a run leaving exactly one assessment per (item, judge)."""

from __future__ import annotations

import math
import secrets
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.store.assessments import HUMAN, LLM_JUDGE, Assessment
from tests.judges.evaluation_servers import SLOW_JUDGE_MODEL, EvalGateway, evaluation_gateway, wait_for
from tests.llm.conftest import FakeUpstream
from tests.llm.conftest import fake_upstream as fake_upstream  # noqa: F401 (a fixture, used by name)


@pytest.fixture(scope="module")
def gw(fake_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EvalGateway]:  # noqa: F811
    with evaluation_gateway(tmp_path_factory.mktemp("evaluations"), fake_upstream) as gateway:
        yield gateway


def marked(answer: str, **verdicts: Any) -> str:
    """An answer carrying the fake judge's scripted verdict per judge."""
    markers = " ".join(f"[[verdict.{name}={'true' if v is True else 'false' if v is False else v}]]"
                       for name, v in verdicts.items())  # fmt: skip
    return f"{answer} {markers}".strip()


def expected_aggregate(rows: list[Assessment], name: str) -> dict[str, Any]:
    """What the stored rows say of one judge, computed here from the rows themselves."""
    verdicts = [a for a in rows if a.name == name and a.source_type == LLM_JUDGE]
    judged = [a for a in verdicts if a.error_code is None]
    scores = [a.score for a in judged if a.score is not None]
    booleans = [a.value for a in judged if isinstance(a.value, bool)]
    return {
        "count": len(judged),
        "errors": len(verdicts) - len(judged),
        "mean_score": math.fsum(scores) / len(scores) if scores else None,
        "pass_rate": sum(booleans) / len(booleans) if booleans else None,
        "labels": dict(sorted(Counter(a.label for a in judged if a.label is not None).items())),
    }


def test_items_with_outputs_aggregates_equal_the_stored_assessments(gw: EvalGateway) -> None:
    pattern = [(True, True), (True, False), (False, True), (True, True), (False, False), (True, True)]
    items = [
        {"inputs": {"question": f"Question {i}?"},
         "outputs": marked(f"Answer {i}.", relevance_to_query=rel, safety=safe)}
        for i, (rel, safe) in enumerate(pattern)
    ]  # fmt: skip
    answer = gw.post({"judges": ["relevance_to_query", "safety"], "items": items, "name": "marked"})
    assert answer["items"] == 6 and answer["judge_calls"] == 12 and answer["target_calls"] == 0
    view = gw.wait(answer["id"])
    assert view["status"] == "completed" and view["name"] == "marked"
    assert view["progress"] == {"done": 6, "errors": 0, "pending": 0, "total": 6}
    for item, (rel, safe) in zip(view["items"], pattern, strict=True):
        values = {a["name"]: a["value"] for a in item["assessments"]}
        assert values == {"relevance_to_query": rel, "safety": safe}, item
        assert all(a["judge_prompt_name"] == f"judges.{a['name']}" for a in item["assessments"])
    rows = gw.stored(answer["id"])
    assert len(rows) == 12
    for name in ("relevance_to_query", "safety"):
        assert view["aggregates"][name] == expected_aggregate(rows, name)
    assert view["aggregates"]["relevance_to_query"]["pass_rate"] == pytest.approx(4 / 6)
    assert [group["items"] for group in view["by_version"]] == [6]
    metrics = gw.client.get("/metrics").text
    assert 'gateway_evaluation_items_total{status="done"}' in metrics


def test_outputs_generated_through_a_route_and_a_pinned_prompt_version(gw: EvalGateway) -> None:
    gw.create_prompt("qa", "Question: {{ question }}", "Answer briefly: {{ question }}")
    assert gw.client.put("/api/prompts/qa/aliases/production", json={"version": 2}).status_code == 200
    items = [{"inputs": {"question": f"What is {i} plus {i}?"}} for i in range(3)]
    body = {"judges": ["relevance_to_query"], "items": items, "target": {"route": "chat", "prompt": "qa@production"}}
    answer = gw.post(body)
    assert answer["target_calls"] == 3 and answer["judge_calls"] == 3
    view = gw.wait(answer["id"])
    assert view["status"] == "completed", view
    assert view["request"]["target"] == {
        "route": "chat",
        "prompt": {"ref": "qa@production", "name": "qa", "version": 2},
    }
    for index, item in enumerate(view["items"]):
        assert item["outputs"] == f"Echo: Answer briefly: What is {index} plus {index}?"
        assert (item["prompt_name"], item["prompt_version"], item["model"]) == ("qa", 2, "fake-model")
        assert len(item["trace_id"]) == 32 and len(item["span_id"]) == 16
        assert [a["name"] for a in item["assessments"]] == ["relevance_to_query"]
    assert [(g["prompt_name"], g["prompt_version"], g["model"], g["items"]) for g in view["by_version"]] == [
        ("qa", 2, "fake-model", 3)
    ]
    # The generating call is a stored trace of its own, with the prompt version and the run's id.
    first = view["items"][0]
    trace = wait_for(lambda: (r := gw.client.get(f"/api/traces/{first['trace_id']}")).status_code == 200 and r.json(),
                     what="the generating call's summary")  # fmt: skip
    (summary,) = trace["summaries"]
    assert (summary["route"], summary["prompt_name"], summary["prompt_version"]) == ("chat", "qa", 2)
    assert summary["attributes"]["gateway.evaluation.id"] == answer["id"]


def _client_calls(gw: EvalGateway, route: str, texts: list[str]) -> list[str]:
    """Chat calls through the proxy, each in a trace of the caller's; their trace ids once stored."""
    trace_ids = []
    for text in texts:
        trace_id = secrets.token_hex(16)
        headers = {"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"}
        body = {"model": route, "messages": [{"role": "user", "content": text}]}
        assert gw.client.post("/v1/chat/completions", json=body, headers=headers).status_code == 200
        trace_ids.append(trace_id)
    for trace_id in trace_ids:
        wait_for(lambda t=trace_id: gw.client.get(f"/api/traces/{t}").status_code == 200, what=f"trace {trace_id}")
    return trace_ids


def test_trace_ids_judge_the_stored_calls(gw: EvalGateway) -> None:
    texts = [f"Why is the sky blue, take {i}? [[verdict.safety=true]]" for i in range(3)]
    trace_ids = _client_calls(gw, "chat", texts)
    answer = gw.post({"judges": ["safety", "relevance_to_query"], "trace_ids": trace_ids})
    assert answer["items"] == 3
    view = gw.wait(answer["id"])
    assert view["status"] == "completed", view
    for item, trace_id, text in zip(view["items"], trace_ids, texts, strict=True):
        assert item["trace_id"] == trace_id and item["inputs"] == text and item["outputs"] == f"Echo: {text}"
        assert {a["name"]: a["value"] for a in item["assessments"]}["safety"] is True
    # The verdicts are on the stored trace too.
    stored = gw.client.get(f"/api/traces/{trace_ids[0]}").json()
    assert {a["name"] for a in stored["assessments"]} >= {"safety", "relevance_to_query"}
    unknown = gw.client.post("/api/evaluations", json={"judges": ["safety"], "trace_ids": ["f" * 32]})
    assert unknown.status_code == 400 and "f" * 32 in unknown.json()["message"]


def test_stored_responses_and_messages_calls_are_judged_from_their_own_formats(gw: EvalGateway) -> None:
    """A Responses API call and an Anthropic Messages call, captured: their stored content is read back as
    the judged inputs and outputs, as a chat call's is."""
    question = "Which planet is largest? [[verdict.safety=true]]"
    calls = {
        "/v1/responses": {"model": "chat", "input": question},
        "/v1/messages": {"model": "claude", "max_tokens": 64, "messages": [{"role": "user", "content": question}]},
    }
    trace_ids = []
    for path, body in calls.items():
        trace_id = secrets.token_hex(16)
        headers = {"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"}
        answer = gw.client.post(path, json=body, headers=headers)
        assert answer.status_code == 200, answer.text
        trace_ids.append(trace_id)
    for trace_id in trace_ids:
        wait_for(lambda t=trace_id: gw.client.get(f"/api/traces/{t}").status_code == 200, what=f"trace {trace_id}")
    view = gw.wait(gw.post({"judges": ["safety"], "trace_ids": trace_ids})["id"])
    assert view["status"] == "completed", view
    for item in view["items"]:
        assert item["inputs"] == question
        assert isinstance(item["outputs"], str) and question in item["outputs"], item
        assert [(a["name"], a["value"]) for a in item["assessments"]] == [("safety", True)]


def test_a_trace_filter_is_capped_and_the_cap_named(gw: EvalGateway) -> None:
    _client_calls(gw, "filtered", [f"Filtered question {i}?" for i in range(6)])
    capped = gw.post({"judges": ["safety"], "traces": {"route": "filtered"}})
    assert capped["items"] == 4
    assert capped["cap"] == {"limit": 4, "from": "judges.max_trace_items", "matched_more": True}
    smaller = gw.post({"judges": ["safety"], "traces": {"route": "filtered", "limit": 2}})
    assert smaller["items"] == 2 and smaller["cap"] == {"limit": 2, "from": "traces.limit", "matched_more": True}
    view = gw.wait(smaller["id"])
    # newest first
    assert [item["inputs"] for item in view["items"]] == ["Filtered question 5?", "Filtered question 4?"]
    gw.wait(capped["id"])
    # The judges' own calls are never judged.
    judges_only = gw.client.post("/api/evaluations", json={"judges": ["safety"], "traces": {"route": "judge"}})
    assert judges_only.status_code == 400 and "no stored LLM call matches" in judges_only.json()["message"]


def test_dry_run_counts_and_estimates_without_calling(gw: EvalGateway, fake_upstream: FakeUpstream) -> None:  # noqa: F811
    before = len(fake_upstream.recorder.requests)
    runs_before = len(gw.client.get("/api/evaluations", params={"limit": 200}).json()["evaluations"])
    items = [
        {"inputs": {"question": "What is 2+2?"}, "expectations": {"expected_response": "4"}},
        {"inputs": {"question": "What is 3+3?"}, "expectations": {"expected_response": "6"}},
        {"inputs": {"question": "What is 4+4?"}},  # correctness has nothing to compare with: no call
        {"inputs": {"question": "What is 5+5?"}, "outputs": "10", "expectations": {"expected_response": "10"}},
    ]
    body = {"judges": ["relevance_to_query", "correctness"], "items": items, "target": {"route": "chat"},
            "dry_run": True}  # fmt: skip
    answer = gw.post(body, status=200)
    assert answer["dry_run"] is True and "id" not in answer
    assert (answer["items"], answer["target_calls"], answer["judge_calls"]) == (4, 3, 7)  # the last has outputs
    estimate = answer["estimate"]
    assert estimate["by_route"]["chat"]["calls"] == 3 and estimate["by_route"]["judge"]["calls"] == 7
    assert estimate["input_tokens"] > 0 and estimate["output_tokens"] == 3 * 256 + 7 * 80
    expected_cost = (estimate["input_tokens"] * 2.0 + estimate["output_tokens"] * 8.0) / 1_000_000
    assert estimate["cost_usd"] == pytest.approx(expected_cost)
    assert len(fake_upstream.recorder.requests) == before
    assert len(gw.client.get("/api/evaluations", params={"limit": 200}).json()["evaluations"]) == runs_before


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"judges": ["no_such_judge"], "items": [{"inputs": "q", "outputs": "a"}]}, "judges[0]"),
        ({"judges": ["guidelines"], "items": [{"inputs": "q", "outputs": "a"}]}, "judges[0].guidelines"),
        ({"judges": ["safety"], "items": [{"inputs": "q"}], "target": {"route": "nope"}}, "target.route"),
        ({"judges": ["safety"], "items": [{"inputs": "q"}], "target": {"route": "chat", "prompt": "missing@x"}},
         "target.prompt"),
        ({"judges": ["safety"], "items": [{"inputs": {"topic": "x"}}], "target": {"route": "chat", "prompt": "qa/1"}},
         "items[0].inputs"),
        ({"judges": ["safety"], "traces": {"route": "nothing-here"}}, "traces"),
    ],
)  # fmt: skip
def test_what_the_gateway_checks_is_a_400_naming_the_field(gw: EvalGateway, body: dict[str, Any], named: str) -> None:
    if "prompt" in body.get("target", {}) and gw.client.get("/api/prompts/qa").status_code == 404:
        gw.create_prompt("qa", "Question: {{ question }}")
    answer = gw.client.post("/api/evaluations", json=body)
    assert answer.status_code == 400, answer.text
    assert named in answer.json()["message"]


def test_cancel_drops_what_has_not_started(gw: EvalGateway, fake_upstream: FakeUpstream) -> None:  # noqa: F811
    gw.create_judge("patient")
    arrived = lambda: fake_upstream.recorder.calls_by_model.get(SLOW_JUDGE_MODEL, 0)  # noqa: E731
    before = arrived()
    items = [{"inputs": f"q{i}", "outputs": f"a{i}"} for i in range(40)]
    answer = gw.post({"judges": ["patient"], "items": items})
    evaluation_id = answer["id"]
    wait_for(lambda: gw.view(evaluation_id, items=False)["progress"]["done"] >= 1, what="a first item done")
    cancelled = gw.client.delete(f"/api/evaluations/{evaluation_id}")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    # The jobs in work finish (one verdict per call that reached the upstream); nothing else starts.
    wait_for(lambda: len(gw.stored(evaluation_id)) == arrived() - before
             == gw.view(evaluation_id, items=False)["progress"]["done"], what="the jobs in work finished")  # fmt: skip
    view = gw.view(evaluation_id, items=False)
    assert view["status"] == "cancelled" and view["finished_at"] is not None
    assert 1 <= view["progress"]["done"] < 40 and view["progress"]["pending"] == 40 - view["progress"]["done"]
    assert gw.client.delete(f"/api/evaluations/{evaluation_id}").status_code == 200  # again: the same answer
    done = gw.post({"judges": ["safety"], "items": [{"inputs": "q", "outputs": "a"}]})
    gw.wait(done["id"])
    refused = gw.client.delete(f"/api/evaluations/{done['id']}")
    assert refused.status_code == 409 and refused.json()["error_code"] == "INVALID_STATE"
    assert gw.client.delete("/api/evaluations/nope").status_code == 404


def test_human_labels_on_items(gw: EvalGateway) -> None:
    answer = gw.post({"judges": ["safety"], "items": [{"inputs": "q", "outputs": marked("a", safety=True)}]})
    gw.wait(answer["id"])
    url = f"/api/evaluations/{answer['id']}/items/0/assessments"
    first = gw.client.post(url, json={"name": "safety", "value": False, "source_id": "ann"})
    assert first.status_code == 201, first.text
    assert (first.json()["source_type"], first.json()["label"], first.json()["item_index"]) == (HUMAN, "no", 0)
    again = gw.client.post(url, json={"name": "safety", "value": True, "source_id": "ann", "rationale": "fine"})
    assert again.status_code == 201 and again.json()["id"] == first.json()["id"]  # the same person: replaced
    view = gw.view(answer["id"])
    human = [a for a in view["items"][0]["assessments"] if a["source_type"] == HUMAN]
    assert [(a["value"], a["rationale"]) for a in human] == [(True, "fine")]
    assert view["aggregates"]["safety"]["count"] == 1  # the judge's verdict only
    missing = gw.client.post(f"/api/evaluations/{answer['id']}/items/7/assessments", json={"name": "x", "value": 1})
    assert missing.status_code == 404 and "item 7" in missing.json()["message"]
    bad = gw.client.post(url, json={"name": "safety"})
    assert bad.status_code == 400 and "'value'" in bad.json()["message"]


def test_runs_are_listed_newest_first(gw: EvalGateway) -> None:
    ids = [gw.post({"judges": ["safety"], "items": [{"inputs": "q", "outputs": "a"}]})["id"] for _ in range(3)]
    for evaluation_id in ids:
        gw.wait(evaluation_id)
    page = gw.client.get("/api/evaluations", params={"limit": 2}).json()
    assert [run["id"] for run in page["evaluations"]] == ids[::-1][:2] and page["next_page_token"]
    assert page["evaluations"][0]["judges"] == ["safety"] and page["evaluations"][0]["status"] == "completed"
    rest = gw.client.get("/api/evaluations", params={"limit": 1, "page_token": page["next_page_token"]}).json()
    assert [run["id"] for run in rest["evaluations"]] == [ids[0]]


def test_a_restart_resumes_the_run_with_one_assessment_per_item_and_judge(
    fake_upstream: FakeUpstream,  # noqa: F811
    tmp_path: Path,
) -> None:
    items = [{"inputs": f"q{i}", "outputs": f"a{i}"} for i in range(12)]
    with evaluation_gateway(tmp_path, fake_upstream, {"concurrency": 2}) as first:
        first.create_judge("patient")
        answer = first.post({"judges": ["patient", "safety"], "items": items})
        evaluation_id = answer["id"]
        wait_for(lambda: first.view(evaluation_id, items=False)["progress"]["done"] >= 2, what="two items done")
    # The process stopped mid-run: the run is still "running" in the store, some items not finished (their
    # jobs on the judge queue: "queued").
    left = first.evaluations.get(evaluation_id)
    assert left is not None and left["status"] == "running"
    unfinished = [item for item in first.evaluations.items(evaluation_id) if item["status"] in ("pending", "queued")]
    assert 0 < len(unfinished) < 12
    with evaluation_gateway(tmp_path, fake_upstream) as second:
        view = second.wait(evaluation_id)
        assert view["status"] == "completed" and view["progress"]["done"] == 12
        _assert_one_per_item_and_judge(second, evaluation_id, 12, ("patient", "safety"))
        # Its jobs run again (every item pending again, the run queued): still one assessment each.
        for index in range(12):
            second.evaluations.update_item(evaluation_id, index, status="pending")
        second.evaluations.set_status(evaluation_id, "queued")
    with evaluation_gateway(tmp_path, fake_upstream) as third:
        assert third.wait(evaluation_id)["status"] == "completed"
        _assert_one_per_item_and_judge(third, evaluation_id, 12, ("patient", "safety"))


def _assert_one_per_item_and_judge(gw: EvalGateway, evaluation_id: str, items: int, judges: tuple[str, ...]) -> None:
    rows = gw.stored(evaluation_id)
    pairs = Counter((a.item_index, a.name) for a in rows)
    assert pairs == {(index, name): 1 for index in range(items) for name in judges}
    assert gw.assessments.count(evaluation_id=evaluation_id) == items * len(judges)


def test_unknown_run_and_bad_parameters(gw: EvalGateway) -> None:
    assert gw.client.get("/api/evaluations/nope").status_code == 404
    assert gw.client.get("/api/evaluations", params={"limit": 0}).status_code == 400
    assert gw.client.get("/api/evaluations", params={"page_token": "garbage!"}).status_code == 400
    assert gw.client.get("/api/evaluations/x", params={"items": "maybe"}).status_code == 400
    not_an_object = gw.client.post("/api/evaluations", content=b"[1]", headers={"content-type": "application/json"})
    assert not_an_object.status_code == 400
