"""JudgeRunner end to end: judges from the gateway's catalog, calls through the real proxy path to the fake
upstream's judge mode (verdicts scripted by ``[[verdict...]]`` markers, answer formats and failures by model
knobs), assessments in the real SQLite store."""

from __future__ import annotations

import asyncio
import os
import secrets
import uuid
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from gateway.judge_settings import JudgesSettings
from gateway.store.assessments import LLM_JUDGE, Assessment
from gateway.telemetry import semconv as sc
from gateway.telemetry.setup import build_events, build_resource
from judges import metrics
from judges.definitions import Judge
from judges.runner import JudgeRunner, Target
from tests.judges.conftest import FakeUpstream, JudgeGateway, wait_until
from tests.otlp_receiver import otlp_receiver

BOOL = {"type": "bool"}
SCALE = {"type": "int", "min": 1, "max": 5}
SHARE = {"type": "float", "min": 0, "max": 1}
LABELS = {"type": "categorical", "labels": ["good", "ok", "bad"]}
KINDS = {"bool": BOOL, "int": SCALE, "float": SHARE, "categorical": LABELS}


def unique(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(4)}"


def trace() -> Target:
    return Target(trace_id=secrets.token_hex(16), span_id=secrets.token_hex(8))


def item(text: str = "What is 2 + 2?", outputs: Any = "4", **extra: Any) -> dict[str, Any]:
    return {"inputs": {"question": text}, "outputs": outputs, **extra}


def judge_calls(up: FakeUpstream, model_prefix: str = "fake-model") -> list[dict[str, Any]]:
    return [r.json() for r in up.recorder.requests if str(r.json().get("model", "")).startswith(model_prefix)]


def custom(gw: JudgeGateway, kind: str, route: str = "judge") -> Judge:
    return gw.create_judge(unique(kind), "Rate the answer {{ outputs }} to {{ inputs }}.", KINDS[kind], route)


@pytest.mark.parametrize(
    ("kind", "marker", "value", "score", "label"),
    [
        ("bool", "false", False, 0.0, "no"),
        ("int", "4", 4, 4.0, None),
        ("float", "0.25", 0.25, 0.25, None),
        ("categorical", '"bad"', "bad", None, "bad"),
    ],
)
def test_every_value_kind_gives_its_scripted_verdict(
    gw: JudgeGateway, upstream: FakeUpstream, kind: str, marker: str, value: Any, score: Any, label: Any
) -> None:
    judge = custom(gw, kind)
    target = trace()
    result = gw.run_one(judge, item(f"Grade this [[verdict.{judge.name}={marker}]]"), target)

    assert result.error_code is None, result.error_message
    assert (result.value, result.score, result.label) == (value, score, label)
    assert type(result.value) is type(value)
    assert result.rationale == f"scripted by the [[verdict.{judge.name}=...]] marker"
    assert (result.name, result.source_type, result.trace_id, result.span_id) == (
        judge.name,
        LLM_JUDGE,
        target.trace_id,
        target.span_id,
    )
    assert (result.judge_prompt_name, result.judge_prompt_version) == (f"judges.{judge.name}", 1)
    assert result.judge_model == "fake-model" and result.attempts == 1 and result.metadata["judge_calls"] == 1
    assert result.input_tokens and result.output_tokens and result.latency_ms and result.latency_ms > 0
    assert result.cost_usd == pytest.approx((result.input_tokens * 2.0 + result.output_tokens * 8.0) / 1e6)
    assert gw.assessments.get(result.id) == result  # as stored
    (sent,) = judge_calls(upstream)
    assert sent["model"] == "fake-model" and sent["temperature"] == 0
    assert sent["response_format"]["json_schema"]["name"] == f"judge_{judge.name}"
    assert metrics.CALLS.get((judge.name, "ok")) == 1


def test_builtin_judges_read_their_tagged_sections(gw: JudgeGateway) -> None:
    correctness, safety = gw.judge("correctness"), gw.judge("safety")
    assert correctness.route == "judge" and correctness.builtin  # judges.route
    question = {"question": "What is the capital of Australia?"}
    right = {"inputs": question, "outputs": "Canberra.", "expectations": {"expected_response": "Canberra"}}
    wrong = {**right, "outputs": "Sydney is the capital."}
    rude = {"inputs": "Help me", "outputs": "Shut up, you idiot."}
    results = gw.run_many(
        [(correctness, right, trace(), None), (correctness, wrong, trace(), None), (safety, rude, trace(), None)]
    )
    assert [r.value for r in results] == [True, False, False]
    assert all(r.judge_prompt_name == f"judges.{r.name}" and r.error_code is None for r in results)


@pytest.mark.parametrize(
    ("route", "kind", "value", "attempts", "error_code"),
    [
        ("fmt-fenced", "bool", True, 1, None),
        ("fmt-preamble", "int", 3, 1, None),
        ("fmt-yes_word", "bool", True, 1, None),
        ("fmt-digit_string", "int", 3, 1, None),
        ("repaired", "int", 3, 2, None),  # out of range once, then plain JSON: the repair succeeds
        ("fmt-out_of_range", "int", None, 2, "out_of_range"),
        ("fmt-no_json", "bool", None, 2, "no_json"),
        ("fmt-wrong_type", "categorical", None, 2, "wrong_type"),
    ],
)
def test_answer_formats_end_as_documented(
    gw: JudgeGateway, upstream: FakeUpstream, route: str, kind: str, value: Any, attempts: int, error_code: str | None
) -> None:
    judge = custom(gw, kind, route)  # no marker: the fake's default for a custom judge (true, midpoint, first label)
    result = gw.run_one(judge, item(), trace())

    assert (result.value, result.attempts, result.error_code) == (value, attempts, error_code), result
    assert result.metadata["judge_calls"] == attempts
    sent = judge_calls(upstream)
    assert len(sent) == attempts
    if attempts == 2:  # the repair: the same request, the bad answer, and what was wrong with it
        first, repair = sent
        assert repair["messages"][: len(first["messages"])] == first["messages"]
        assert repair["messages"][-2]["role"] == "assistant" and repair["messages"][-1]["role"] == "user"
        assert repair["response_format"] == first["response_format"]
        assert len(result.metadata["judge_trace_ids"]) == 2
    if error_code is not None:
        assert result.value is None and result.score is None and result.error_message
        assert "after one repair request" in result.error_message or "same after one repair" in result.error_message
        assert gw.assessments.get(result.id) == result


def test_a_500_then_success_stores_one_success_with_two_attempts(gw: JudgeGateway, upstream: FakeUpstream) -> None:
    judge = custom(gw, "bool", "flaky")
    result = gw.run_one(judge, item(f"[[verdict.{judge.name}=true]]"), trace())
    assert (result.value, result.error_code, result.attempts, result.metadata["judge_calls"]) == (True, None, 2, 1)
    assert len(judge_calls(upstream)) == 2
    assert gw.assessments.count(name=judge.name) == 1


def test_a_429_with_retry_after_2_is_not_retried_before_2_s(gw: JudgeGateway, upstream: FakeUpstream) -> None:
    judge = custom(gw, "bool", "rate-limited")
    result = gw.run_one(judge, item(), trace(), settings=JudgesSettings(call_timeout_s=30))
    assert (result.value, result.error_code, result.attempts) == (True, None, 2)
    first, second = (r for r in upstream.recorder.requests if r.path.endswith("/chat/completions"))
    assert second.at - first.at >= 2.0  # the upstream's Retry-After, honoured (a lower bound, not a duration check)


def test_hanging_calls_end_as_timeouts_without_stopping_other_jobs(gw: JudgeGateway, upstream: FakeUpstream) -> None:
    hanging, fast = custom(gw, "bool", "hanging"), custom(gw, "bool", "judge")
    settings = JudgesSettings(route_concurrency=4, call_timeout_s=1)
    seen: dict[str, Any] = {}

    def arrived() -> int:
        return len([r for r in upstream.recorder.requests if r.json().get("model") == "fake-model@delay=60"])

    async def work(runner: JudgeRunner) -> tuple[list[Assessment], list[Assessment]]:
        slow_jobs = [asyncio.create_task(runner.run(hanging, item(), target=trace())) for _ in range(5)]
        fast_jobs = [asyncio.create_task(runner.run(fast, item(), target=trace())) for _ in range(3)]
        fast_done = await asyncio.gather(*fast_jobs)  # other routes never wait for the hung one
        seen["slow pending when the fast ones were done"] = sum(not t.done() for t in slow_jobs)
        while arrived() < 4:
            await asyncio.sleep(0.01)
        # Four slots, four hung calls: the fifth job waits for a slot until a timeout frees one.
        seen["arrived while four hang"] = arrived()
        seen["pending while four hang"] = sum(not t.done() for t in slow_jobs)
        return list(await asyncio.gather(*slow_jobs)), list(fast_done)

    slow, quick = gw.run(work, settings)

    assert [r.value for r in quick] == [True] * 3
    assert seen["slow pending when the fast ones were done"] == 5
    if seen["pending while four hang"] == 5:  # checked before any timeout fired (the usual case)
        assert seen["arrived while four hang"] == 4
    assert [r.error_code for r in slow] == ["timeout"] * 5
    assert all("timeout_s=1 s" in (r.error_message or "") for r in slow)
    assert all(r.value is None and r.metadata["judge_calls"] == 1 for r in slow)
    # A call that timed out is still a trace of its own, recorded on the error assessment with its attempt.
    assert all(r.judge_trace_id and r.judge_trace_id != r.trace_id and r.attempts == 1 for r in slow), slow
    assert arrived() == 5  # the fifth job got a slot once the timeout fired


def test_a_custom_judge_with_context_is_refused_naming_it(gw: JudgeGateway) -> None:
    body = {"name": unique("ctx"), "instructions": "Is {{ outputs }} supported by {{ context }}?", "route": "judge",
            "value_kind": BOOL}  # fmt: skip
    answer = gw.client.post("/api/judges", json=body)
    assert answer.status_code == 400
    assert answer.json()["error_code"] == "INVALID_PARAMETER_VALUE" and "'context'" in answer.json()["message"]
    assert gw.client.get(f"/api/judges/{body['name']}").status_code == 404


def test_correctness_without_expectations_is_an_error_assessment_naming_them(
    gw: JudgeGateway, upstream: FakeUpstream
) -> None:
    correctness = gw.judge("correctness")
    result = gw.run_one(correctness, item("What is the capital of France?", "Paris"), trace())
    assert result.error_code == "missing_field" and "'expectations'" in (result.error_message or "")
    assert result.value is None and result.attempts is None and result.metadata["judge_calls"] == 0
    assert gw.assessments.get(result.id) == result
    assert judge_calls(upstream) == []  # nothing to call the judge about


def test_the_same_job_run_twice_leaves_one_row_and_calls_once(gw: JudgeGateway, upstream: FakeUpstream) -> None:
    judge = custom(gw, "int")
    evaluation_id = str(uuid.uuid4())
    job = (judge, item(), Target(item_index=7), evaluation_id)

    first = gw.run_many([job])[0]
    again = gw.run_many([job, job])  # a retried job, and two deliveries at once
    assert again == [first, first]
    assert gw.assessments.count(evaluation_id=evaluation_id) == 1
    assert gw.assessments.count(name=judge.name) == 1
    assert len(judge_calls(upstream)) == 1
    assert (first.evaluation_id, first.item_index, first.trace_id) == (evaluation_id, 7, None)

    racing = (judge, item(), Target(item_index=8), evaluation_id)
    both = gw.run_many([racing, racing])  # concurrent, nothing stored yet: at most one row whatever happens
    assert both[0].id == both[1].id and gw.assessments.count(evaluation_id=evaluation_id) == 2


def test_the_judge_call_is_its_own_trace_linked_to_the_judged_span(gw: JudgeGateway) -> None:
    answer = httpx.post(gw.v1 + "/chat/completions", timeout=30, json={
        "model": "judge", "messages": [{"role": "user", "content": "What is 2 + 2?"}]})  # fmt: skip
    assert answer.status_code == 200, answer.text
    spans = gw.wait_spans(lambda spans: any(s.kind is SpanKind.SERVER for s in spans))
    judged = next(s for s in spans if s.kind is SpanKind.SERVER)
    assert judged.context is not None
    target = Target(format(judged.context.trace_id, "032x"), format(judged.context.span_id, "016x"))
    gw.exporter.clear()
    judge = gw.judge("relevance_to_query")

    result = gw.run_one(judge, item(outputs=answer.json()["choices"][0]["message"]["content"]), target)

    assert result.error_code is None and result.judge_trace_id and result.judge_trace_id != target.trace_id

    def top() -> ReadableSpan | None:
        for span in gw.spans():
            if span.parent is None and span.context and format(span.context.trace_id, "032x") == result.judge_trace_id:
                return span
        return None

    span: ReadableSpan = wait_until(top, what="the judge call's top span")
    assert [(format(link.context.trace_id, "032x"), format(link.context.span_id, "016x")) for link in span.links] == [
        (target.trace_id, target.span_id)
    ]
    attributes = dict(span.attributes or {})
    assert attributes[sc.GATEWAY_JUDGE_NAME] == "relevance_to_query"
    assert attributes[sc.GATEWAY_JUDGE_PROMPT_NAME] == "judges.relevance_to_query"
    assert attributes[sc.GATEWAY_JUDGE_PROMPT_VERSION] == judge.prompt_version
    assert attributes[sc.GATEWAY_JUDGE_TARGET_TRACE_ID] == target.trace_id
    assert attributes[sc.GATEWAY_JUDGE_TARGET_SPAN_ID] == target.span_id
    # Both traces are in the trace store; the judged one shows the assessment.
    stored = wait_until(lambda: gw.client.get(f"/api/traces/{result.judge_trace_id}").status_code == 200,
                        what="the judge call in the trace store")  # fmt: skip
    assert stored
    judged_trace = gw.client.get(f"/api/traces/{target.trace_id}").json()
    assert [a["id"] for a in judged_trace["assessments"]] == [result.id]


def test_each_written_assessment_is_one_evaluation_event_on_the_judged_span(
    gw: JudgeGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At a real OTLP receiver: the result and the error, parented to the judged span; a re-run emits nothing."""
    judge, correctness = custom(gw, "int"), gw.judge("correctness")
    target = trace()
    with otlp_receiver() as receiver:
        for name in [n for n in os.environ if n.startswith("OTEL_")]:
            monkeypatch.delenv(name)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        monkeypatch.setenv("OTEL_BLRP_SCHEDULE_DELAY", "50")
        events = build_events(dict(os.environ), build_resource())

        async def work(runner: JudgeRunner) -> list[Assessment]:
            jobs = [(judge, item(f"[[verdict.{judge.name}=2]]")), (correctness, item()), (judge, item())]
            return [await runner.run(j, i, target=target) for j, i in jobs]  # the third: already stored

        try:
            scored, failed, again = gw.run(work, events=events)
            records = receiver.wait_for_logs(lambda got: len(got) >= 2)
        finally:
            events.shutdown(5)

    assert again == scored
    assert len(receiver.received_logs()) == 2
    by_name = {r.attributes[sc.GEN_AI_EVALUATION_NAME]: r for r in records}
    result, error = by_name[judge.name], by_name["correctness"]
    for record in (result, error):
        assert record.event_name == sc.EVENT_GEN_AI_EVALUATION_RESULT
        assert (record.trace_id, record.span_id) == (target.trace_id, target.span_id)
        assert record.attributes[sc.GATEWAY_JUDGE_TARGET_TRACE_ID] == target.trace_id
    assert result.attributes[sc.GEN_AI_EVALUATION_SCORE_VALUE] == 2.0
    assert result.attributes[sc.GEN_AI_EVALUATION_EXPLANATION] == scored.rationale
    assert result.attributes[sc.GATEWAY_JUDGE_PROMPT_NAME] == f"judges.{judge.name}"
    assert "error.type" not in result.attributes
    assert error.attributes["error.type"] == "missing_field" == failed.error_code
    assert "'expectations'" in error.attributes[sc.GEN_AI_EVALUATION_EXPLANATION]
