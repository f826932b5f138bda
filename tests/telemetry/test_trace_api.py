"""Summaries of LLM SERVER spans land in the store in batches and are searched through /api/traces,
on SQLite and PostgreSQL, with no OTLP endpoint configured (the trace store works on its own)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind, Status, StatusCode

from gateway.telemetry import semconv as sc
from tests.telemetry.conftest import RunningGateway, gateway_settings, run_app, wait_until

BASE_NS = 1_767_225_600_000 * 1_000_000  # 2026-01-01T00:00:00Z


def emit_llm_call(
    provider: TracerProvider,
    second: int,
    attributes: Mapping[str, Any] | None = None,
    *,
    status: StatusCode = StatusCode.UNSET,
) -> str:
    """A SERVER span shaped like the LLM proxy's, starting ``second`` s after BASE; returns its trace id."""
    values: dict[str, Any] = {
        sc.GATEWAY_LLM_ROUTE: "gpt-4o-mini",
        sc.GEN_AI_OPERATION_NAME: "chat",
        sc.GEN_AI_REQUEST_MODEL: "gpt-4o-mini",
        sc.HTTP_RESPONSE_STATUS_CODE: 200,
    }
    values.update(attributes or {})
    tracer = provider.get_tracer("test.llm")
    start = BASE_NS + second * 1_000_000_000
    span = tracer.start_span(
        f"chat {values[sc.GEN_AI_REQUEST_MODEL]}", kind=SpanKind.SERVER, attributes=values, start_time=start
    )
    if status is not StatusCode.UNSET:
        span.set_status(Status(status))
    span.end(end_time=start + 250_000_000)
    return format(span.get_span_context().trace_id, "032x")


def _search(gw: RunningGateway, **params: Any) -> dict[str, Any]:
    answer = gw.client.get("/api/traces", params=params)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def _routes(body: dict[str, Any]) -> list[str]:
    return [s["route"] for s in body["traces"]]


def test_summary_of_an_llm_span_maps_every_attribute(store_url: str, otel_env: Callable[..., None]) -> None:
    otel_env()
    settings = gateway_settings(store_url, **{"telemetry.summary_flush_interval_s": 0.05})
    with run_app(settings) as gw:
        messages = orjson.dumps([{"role": "user", "parts": [{"type": "text", "content": "hi"}]}]).decode()
        trace_id = emit_llm_call(
            gw.provider,
            1,
            {
                sc.GATEWAY_LLM_TARGET: "http://127.0.0.1:8001/v1#llama-3.1-8b",
                sc.GATEWAY_LLM_ATTEMPTS: 2,
                sc.GEN_AI_PROVIDER_NAME: "openai",
                sc.GEN_AI_RESPONSE_MODEL: "llama-3.1-8b",
                sc.GEN_AI_REQUEST_STREAM: True,
                sc.GEN_AI_USAGE_INPUT_TOKENS: 11,
                sc.GEN_AI_USAGE_OUTPUT_TOKENS: 7,
                sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK: 0.125,
                sc.GATEWAY_AUTH_KEY_ID: "key-7",
                sc.GEN_AI_PROMPT_NAME: "greeting",
                sc.GEN_AI_PROMPT_VERSION: "3",
                sc.GEN_AI_INPUT_MESSAGES: messages,
                sc.GEN_AI_OUTPUT_MESSAGES: "[not json",
                "gen_ai.response.finish_reasons": ("stop",),
                "http.request.header.authorization": "Bearer sk-client",
                "llm.upstream_api_key": "sk-provider",
                "gateway.secret": "x",
            },
        )
        (summary,) = wait_until(
            lambda: gw.client.get(f"/api/traces/{trace_id}").json().get("summaries"), what="summary"
        )
    assert summary == {
        "trace_id": trace_id,
        "span_id": summary["span_id"],
        "started_at": BASE_NS // 1_000_000 + 1000,
        "duration_ms": 250.0,
        "time_to_first_chunk_ms": 125.0,
        "operation": "chat",
        "route": "gpt-4o-mini",
        "target": "http://127.0.0.1:8001/v1#llama-3.1-8b",
        "provider": "openai",
        "request_model": "gpt-4o-mini",
        "response_model": "llama-3.1-8b",
        "status_code": 200,
        "error_type": None,
        "stream": True,
        "input_tokens": 11,
        "output_tokens": 7,
        "key_id": "key-7",
        "prompt_name": "greeting",
        "prompt_version": 3,
        "input_content": [{"role": "user", "parts": [{"type": "text", "content": "hi"}]}],
        "output_content": "[not json",
        # Headers and anything named like a credential never reach the store.
        "attributes": {sc.GATEWAY_LLM_ATTEMPTS: 2, "gen_ai.response.finish_reasons": ["stop"]},
        "cost_usd": None,  # the route has no prices
    }
    assert len(summary["span_id"]) == 16


def test_only_llm_server_spans_become_summaries(store_url: str, otel_env: Callable[..., None]) -> None:
    otel_env()
    settings = gateway_settings(store_url, **{"telemetry.summary_flush_interval_s": 0.05})
    with run_app(settings) as gw:
        tracer = gw.provider.get_tracer("test")
        with tracer.start_as_current_span("POST /invocations", kind=SpanKind.SERVER):
            pass
        with tracer.start_as_current_span("chat x", kind=SpanKind.CLIENT, attributes={sc.GATEWAY_LLM_ROUTE: "r"}):
            pass
        marker = emit_llm_call(gw.provider, 5, {sc.GATEWAY_LLM_ROUTE: "kept"})
        wait_until(lambda: gw.client.get(f"/api/traces/{marker}").status_code == 200, what="marker summary")
        assert _routes(_search(gw)) == ["kept"]


def test_summaries_are_written_in_batches(store_url: str, otel_env: Callable[..., None]) -> None:
    """With a 60 s flush interval, only a full batch (10) wakes the writer; the 10 rows go in one insert."""
    otel_env()
    settings = gateway_settings(store_url, **{"telemetry.summary_batch": 10, "telemetry.summary_flush_interval_s": 60})
    with run_app(settings) as gw:
        ids = [emit_llm_call(gw.provider, n) for n in range(10)]
        body = wait_until(lambda: len(_search(gw)["traces"]) == 10 and _search(gw), what="10 summaries")
        assert sorted(s["trace_id"] for s in body["traces"]) == sorted(ids)
        if gw.app.state.telemetry.traces.engine.dialect.name == "postgresql":
            # Rows inserted by one transaction share its id (xmin): one batch, one transaction.
            with gw.app.state.telemetry.traces.engine.connect() as conn:
                transactions = conn.execute(sa.text("SELECT count(DISTINCT xmin::text) FROM trace_summaries")).scalar()
            assert transactions == 1
        emit_llm_call(gw.provider, 20, {sc.GATEWAY_LLM_ROUTE: "last"})
    # A partial batch is still written at shutdown.
    with run_app(settings) as gw:
        assert _routes(_search(gw, limit=1)) == ["last"]


def test_every_filter_and_pagination_over_http(store_url: str, otel_env: Callable[..., None]) -> None:
    otel_env()
    settings = gateway_settings(store_url, **{"telemetry.summary_flush_interval_s": 0.05})
    with run_app(settings) as gw:
        p = gw.provider
        emit_llm_call(p, 1, {sc.GATEWAY_LLM_ROUTE: "a"})
        emit_llm_call(p, 2, {sc.GATEWAY_LLM_ROUTE: "b", sc.GEN_AI_RESPONSE_MODEL: "llama"})
        emit_llm_call(p, 3, {sc.GATEWAY_LLM_ROUTE: "c", sc.HTTP_RESPONSE_STATUS_CODE: 502, sc.ERROR_TYPE: "502"})
        emit_llm_call(p, 4, {sc.GATEWAY_LLM_ROUTE: "d"}, status=StatusCode.ERROR)  # error, no error.type
        emit_llm_call(p, 5, {sc.GATEWAY_LLM_ROUTE: "e", sc.GEN_AI_PROMPT_NAME: "greet", sc.GEN_AI_PROMPT_VERSION: 1})
        emit_llm_call(p, 6, {sc.GATEWAY_LLM_ROUTE: "f", sc.GEN_AI_PROMPT_NAME: "greet", sc.GEN_AI_PROMPT_VERSION: 2})
        wait_until(lambda: len(_search(gw)["traces"]) == 6, what="6 summaries")

        assert _routes(_search(gw)) == ["f", "e", "d", "c", "b", "a"]
        assert _routes(_search(gw, route="b")) == ["b"]
        assert _routes(_search(gw, model="llama")) == ["b"]
        assert _routes(_search(gw, model="gpt-4o-mini")) == ["f", "e", "d", "c", "b", "a"]
        assert _routes(_search(gw, status="error")) == ["d", "c"]
        assert _routes(_search(gw, status="ok")) == ["f", "e", "b", "a"]
        assert _routes(_search(gw, status="502")) == ["c"]
        assert _routes(_search(gw, prompt_name="greet")) == ["f", "e"]
        assert _routes(_search(gw, prompt_name="greet", prompt_version=1)) == ["e"]
        base_ms = BASE_NS // 1_000_000
        assert _routes(_search(gw, **{"from": base_ms + 2000, "to": base_ms + 4000})) == ["c", "b"]
        iso_from = dt.datetime.fromtimestamp((base_ms + 5000) / 1000, dt.UTC).isoformat().replace("+00:00", "Z")
        assert _routes(_search(gw, **{"from": iso_from})) == ["f", "e"]
        assert _routes(_search(gw, **{"to": "2026-01-01T02:00:03+02:00"})) == ["b", "a"]  # 00:00:03Z

        pages: list[list[str]] = []
        token = None
        while True:
            body = _search(gw, limit=4, **({"page_token": token} if token else {}))
            pages.append(_routes(body))
            token = body["next_page_token"]
            if token is None:
                break
        assert pages == [["f", "e", "d", "c"], ["b", "a"]]
        filtered = _search(gw, status="ok", limit=3)
        assert _routes(filtered) == ["f", "e", "b"]
        assert _routes(_search(gw, status="ok", limit=3, page_token=filtered["next_page_token"])) == ["a"]


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"status": "maybe"}, "status"),
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"from": "yesterday"}, "from"),
        ({"to": "2026-13-01"}, "to"),
        ({"prompt_version": "v2"}, "prompt_version"),
        ({"page_token": "bogus"}, "page_token"),
        ({"colour": "red"}, "colour"),
        ({"from": "9" * 20}, "from"),  # past year 9999: once an OverflowError and a 500
        ({"to": "9" * 5000}, "to"),  # more digits than int() reads
        ({"prompt_version": "9" * 30}, "prompt_version"),
        ({"limit": "9" * 5000}, "limit"),
        ({"min_score": "high"}, "min_score"),
        ({"max_score": "nan"}, "max_score"),
        ({"min_score": "inf"}, "min_score"),
        ({"max_score": "9" * 5000}, "max_score"),
        ({"assessment": "a\x00b"}, "assessment"),
        ({"assessment_value": "\x00"}, "assessment_value"),
        ({"route": "a\x00"}, "route"),
    ],
)
def test_bad_queries_are_400s_that_name_the_parameter(
    sqlite_url: str, otel_env: Callable[..., None], params: dict[str, str], named: str
) -> None:
    otel_env()
    with run_app(gateway_settings(sqlite_url)) as gw:
        answer = gw.client.get("/api/traces", params=params)
    assert answer.status_code == 400
    body = answer.json()
    assert body["error_code"] == "INVALID_PARAMETER_VALUE" and named in body["message"], body


def test_get_trace_404_names_the_id_and_400_for_a_malformed_one(sqlite_url: str, otel_env: Callable[..., None]) -> None:
    otel_env()
    with run_app(gateway_settings(sqlite_url)) as gw:
        unknown = gw.client.get("/api/traces/" + "ab" * 16)
        malformed = gw.client.get("/api/traces/not-a-trace")
    assert unknown.status_code == 404
    assert "ab" * 16 in unknown.json()["message"]
    assert malformed.status_code == 400 and "not-a-trace" in malformed.json()["message"]
