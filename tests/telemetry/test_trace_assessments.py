"""Assessments over the trace API, on SQLite and PostgreSQL, against a real gateway under uvicorn: the
assessment filters of ``GET /api/traces``, the assessments in ``GET /api/traces/{trace_id}``, and human
feedback through ``POST /api/traces/{trace_id}/assessments`` (replaced by its author, added by another)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from gateway.store.assessments import (
    LLM_JUDGE,
    Assessment,
    AssessmentStore,
    assessment_id,
    score_and_label,
    trace_target,
)
from gateway.telemetry import semconv as sc
from tests.telemetry.conftest import RunningGateway, gateway_settings, run_app, wait_until
from tests.telemetry.test_trace_api import emit_llm_call


def _settings(url: str) -> Any:
    return gateway_settings(url, **{"telemetry.summary_flush_interval_s": 0.05})


def _stored_call(gw: RunningGateway, second: int, route: str) -> tuple[str, str]:
    """An LLM call's summary, once stored: its (trace_id, span_id)."""
    trace_id = emit_llm_call(gw.provider, second, {sc.GATEWAY_LLM_ROUTE: route})
    (summary,) = wait_until(lambda: gw.client.get(f"/api/traces/{trace_id}").json().get("summaries"), what=route)
    return trace_id, summary["span_id"]


def _judge(gw: RunningGateway, trace_id: str, span_id: str, name: str, value: Any, **values: Any) -> Assessment:
    """A judge's verdict, written as the judge runner writes it (insert-if-absent through the app's store)."""
    score, label = score_and_label(value)
    verdict = Assessment(
        id=assessment_id(target=trace_target(trace_id, span_id), judge_name=name, judge_version=1, evaluation_id=None),
        trace_id=trace_id,
        span_id=span_id,
        name=name,
        source_type=LLM_JUDGE,
        value=value,
        score=score,
        label=label,
        **values,
    )
    store: AssessmentStore = gw.app.state.assessments
    assert store.insert_if_absent([verdict]) == 1
    return verdict


def _routes(gw: RunningGateway, **params: Any) -> list[str]:
    answer = gw.client.get("/api/traces", params=params)
    assert answer.status_code == 200, answer.text
    return [summary["route"] for summary in answer.json()["traces"]]


def _feedback(gw: RunningGateway, trace_id: str, body: dict[str, Any], status: int = 201) -> dict[str, Any]:
    answer = gw.client.post(f"/api/traces/{trace_id}/assessments", json=body)
    assert answer.status_code == status, answer.text
    result: dict[str, Any] = answer.json()
    return result


def test_assessment_filters_over_http(store_url: str, otel_env: Callable[..., None]) -> None:
    otel_env()
    with run_app(_settings(store_url)) as gw:
        a = _stored_call(gw, 1, "a")
        b = _stored_call(gw, 2, "b")
        c = _stored_call(gw, 3, "c")
        _stored_call(gw, 4, "d")
        _judge(gw, *a, "correctness", True)
        _judge(gw, *b, "correctness", False)
        _judge(gw, *a, "relevance", 5)
        _judge(gw, *b, "relevance", 2)
        _judge(gw, *c, "tone", "friendly")
        _feedback(gw, c[0], {"name": "correctness", "value": True, "source_id": "alice"})

        assert _routes(gw) == ["d", "c", "b", "a"]
        assert _routes(gw, assessment="correctness") == ["c", "b", "a"]
        assert _routes(gw, assessment="correctness", assessment_value="yes") == ["c", "a"]
        assert _routes(gw, assessment="correctness", assessment_value="false") == ["b"]
        assert _routes(gw, assessment_value="friendly") == ["c"]
        assert _routes(gw, assessment="relevance", min_score="3") == ["a"]
        assert _routes(gw, assessment="relevance", max_score="2.5") == ["b"]
        assert _routes(gw, assessment="relevance", min_score="-1e3", max_score="5") == ["b", "a"]
        assert _routes(gw, assessment="relevance", min_score=2, route="b") == ["b"]
        assert _routes(gw, assessment="nope") == []
        page = gw.client.get("/api/traces", params={"assessment": "correctness", "limit": 2}).json()
        assert [s["route"] for s in page["traces"]] == ["c", "b"]
        rest = {"assessment": "correctness", "limit": 2, "page_token": page["next_page_token"]}
        assert _routes(gw, **rest) == ["a"]


def test_get_trace_answers_its_assessments(store_url: str, otel_env: Callable[..., None]) -> None:
    otel_env()
    with run_app(_settings(store_url)) as gw:
        trace_id, span_id = _stored_call(gw, 1, "a")
        assert gw.client.get(f"/api/traces/{trace_id}").json()["assessments"] == []
        verdict = _judge(
            gw, trace_id, span_id, "correctness", True, rationale="right", judge_model="fake", attempts=1,
            created_at=1000, metadata={"judge_route": "judge"},
        )  # fmt: skip
        _feedback(gw, trace_id, {"name": "correctness", "value": False, "source_id": "alice"})
        body = gw.client.get(f"/api/traces/{trace_id.upper()}").json()
    assert body["trace_id"] == trace_id and len(body["summaries"]) == 1
    judged, labelled = body["assessments"]  # oldest first
    assert judged == verdict.to_dict()
    assert (labelled["source_type"], labelled["source_id"], labelled["value"]) == ("HUMAN", "alice", False)


def test_human_feedback_replaced_by_its_author_added_by_another(store_url: str, otel_env: Callable[..., None]) -> None:
    otel_env()
    with run_app(_settings(store_url)) as gw:
        trace_id, span_id = _stored_call(gw, 1, "a")
        first = _feedback(
            gw,
            trace_id.upper(),
            {"name": "correctness", "value": True, "rationale": "matches", "source_id": "alice", "metadata": {"n": 1}},
        )
        expected_id = assessment_id(
            target=trace_target(trace_id, span_id), judge_name="correctness", judge_version="human:alice",
            evaluation_id=None,
        )  # fmt: skip
        assert first == {
            **first,
            "id": expected_id,
            "trace_id": trace_id,
            "span_id": span_id,  # the trace's only LLM call
            "evaluation_id": None,
            "item_index": None,
            "name": "correctness",
            "source_type": "HUMAN",
            "source_id": "alice",
            "value": True,
            "score": 1.0,
            "label": "yes",
            "rationale": "matches",
            "error_code": None,
            "judge_prompt_name": None,
            "metadata": {"n": 1},
        }
        again = _feedback(gw, trace_id, {"name": "correctness", "value": 2, "source_id": "alice", "span_id": span_id})
        assert again["id"] == expected_id
        assert (again["value"], again["score"], again["label"], again["rationale"]) == (2, 2.0, None, None)
        other = _feedback(gw, trace_id, {"name": "correctness", "value": "partly", "source_id": "bob"})
        anonymous = _feedback(gw, trace_id, {"name": "correctness", "value": "no"})
        _feedback(gw, trace_id, {"name": "correctness", "value": "yes"})  # replaces the anonymous label
        tone = _feedback(gw, trace_id, {"name": "tone", "value": 0.5, "source_id": "alice"})
        assessments = gw.client.get(f"/api/traces/{trace_id}").json()["assessments"]
        assert sorted((a["name"], a["source_id"] or "", a["value"]) for a in assessments) == [
            ("correctness", "", "yes"),
            ("correctness", "alice", 2),
            ("correctness", "bob", "partly"),
            ("tone", "alice", 0.5),
        ]
        assert len({expected_id, other["id"], anonymous["id"], tone["id"]}) == 4
        store: AssessmentStore = gw.app.state.assessments
        assert store.count() == 4  # rows, not what the API shows


def test_feedback_on_a_trace_of_several_calls_names_a_span(sqlite_url: str, otel_env: Callable[..., None]) -> None:
    otel_env()
    with run_app(_settings(sqlite_url)) as gw:
        tracer = gw.provider.get_tracer("test")
        with tracer.start_as_current_span("parent"):  # two LLM SERVER spans in one trace
            trace_id = emit_llm_call(gw.provider, 1)
            emit_llm_call(gw.provider, 2)
        summaries = wait_until(
            lambda: (
                len(gw.client.get(f"/api/traces/{trace_id}").json().get("summaries", [])) == 2
                and gw.client.get(f"/api/traces/{trace_id}").json()["summaries"]
            ),
            what="2 summaries",
        )
        whole = _feedback(gw, trace_id, {"name": "tone", "value": "fine"})
        assert whole["span_id"] is None  # the trace as a whole
        second = summaries[1]["span_id"]
        one = _feedback(gw, trace_id, {"name": "tone", "value": "curt", "span_id": second.upper()})
        assert one["span_id"] == second and one["id"] != whole["id"]
        unknown = _feedback(gw, trace_id, {"name": "tone", "value": "x", "span_id": "0" * 16}, status=400)
        assert "span_id" in unknown["message"] and second in unknown["message"]


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"value": True}, "name"),
        ({"name": "", "value": True}, "name"),
        ({"name": 3, "value": True}, "name"),
        ({"name": "n" * 256, "value": True}, "name"),
        ({"name": "a\x00b", "value": True}, "name"),
        ({"name": "tone"}, "value"),
        ({"name": "tone", "value": None}, "value"),
        ({"name": "tone", "value": [1]}, "value"),
        ({"name": "tone", "value": {"a": 1}}, "value"),
        ({"name": "tone", "value": ""}, "value"),
        ({"name": "tone", "value": True, "rationale": 5}, "rationale"),
        ({"name": "tone", "value": True, "source_id": "s" * 256}, "source_id"),
        ({"name": "tone", "value": True, "span_id": "xyz"}, "span_id"),
        ({"name": "tone", "value": True, "metadata": [1]}, "metadata"),
        ({"name": "tone", "value": True, "colour": "red"}, "colour"),
    ],
)
def test_bad_feedback_is_a_400_naming_the_field(
    sqlite_url: str, otel_env: Callable[..., None], body: dict[str, Any], named: str
) -> None:
    otel_env()
    with run_app(_settings(sqlite_url)) as gw:
        trace_id, _ = _stored_call(gw, 1, "a")
        answer = _feedback(gw, trace_id, body, status=400)
        assert gw.client.get(f"/api/traces/{trace_id}").json()["assessments"] == []
    assert answer["error_code"] == "BAD_REQUEST" and named in answer["message"], answer


def test_feedback_on_an_unknown_or_malformed_trace(sqlite_url: str, otel_env: Callable[..., None]) -> None:
    otel_env()
    with run_app(_settings(sqlite_url)) as gw:
        unknown = _feedback(gw, "ab" * 16, {"name": "tone", "value": True}, status=404)
        malformed = _feedback(gw, "not-a-trace", {"name": "tone", "value": True}, status=400)
        not_json = gw.client.post(f"/api/traces/{'ab' * 16}/assessments", content=b"{nope")
    assert unknown["error_code"] == "RESOURCE_DOES_NOT_EXIST" and "ab" * 16 in unknown["message"]
    assert "not-a-trace" in malformed["message"]
    assert not_json.status_code == 400 and "JSON" in not_json.json()["message"]
