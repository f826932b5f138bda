"""Spans of proxied calls, read from an InMemorySpanExporter on the app's own TracerProvider."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from tests.llm.conftest import FakeUpstream, Gateway, raw_client, running_gateway, target

HELLO = [{"role": "user", "content": "Hello gateway"}]
SERVER_CHAT = "POST /v1/chat/completions"


def _split(spans: list[ReadableSpan]) -> tuple[ReadableSpan, list[ReadableSpan]]:
    (server,) = [s for s in spans if s.kind is SpanKind.SERVER]
    clients = sorted((s for s in spans if s.kind is SpanKind.CLIENT), key=lambda s: s.start_time or 0)
    return server, clients


def _both_ended(spans: list[ReadableSpan]) -> bool:
    return any(s.kind is SpanKind.SERVER for s in spans) and any(s.kind is SpanKind.CLIENT for s in spans)


def test_chat_spans_continue_the_callers_trace(gw: Gateway, upstream: FakeUpstream) -> None:
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    body = {"model": "gpt-4o-mini", "messages": HELLO, "temperature": 0.2, "top_p": 0.9, "max_tokens": 50, "n": 2}
    with raw_client(gw, traceparent=f"00-{trace_id}-{parent_id}-01") as client:
        answer = client.post("/v1/chat/completions", json=body)
    assert answer.status_code == 200

    server, (call,) = _split(gw.wait_spans(_both_ended))
    assert (server.name, call.name) == (SERVER_CHAT, "chat fake-model")
    assert server.context.trace_id == int(trace_id, 16) and server.parent.span_id == int(parent_id, 16)
    assert call.context.trace_id == int(trace_id, 16) and call.parent.span_id == server.context.span_id
    # The upstream continues the CLIENT span's context.
    sent = upstream.recorder.requests[0].headers["traceparent"]
    assert sent.split("-")[1:3] == [trace_id, f"{call.context.span_id:016x}"]

    port = int(upstream.base_url.split(":")[2].split("/")[0])
    assert dict(call.attributes) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "fake-model",
        "server.address": "127.0.0.1",
        "server.port": port,
        "gateway.llm.attempt": 1,
        "gateway.llm.fallback": False,
        "gen_ai.request.temperature": 0.2,
        "gen_ai.request.top_p": 0.9,
        "gen_ai.request.max_tokens": 50,
        "gen_ai.request.choice.count": 2,
        "gen_ai.response.id": answer.json()["id"],
        "gen_ai.response.model": "fake-model",
        "gen_ai.response.finish_reasons": ("stop", "stop"),
        "gen_ai.usage.input_tokens": 2,
        "gen_ai.usage.output_tokens": 6,
    }
    assert call.status.status_code is StatusCode.UNSET
    attributes = dict(server.attributes)
    assert attributes["http.request.method"] == "POST" and attributes["url.path"] == "/v1/chat/completions"
    assert attributes["http.response.status_code"] == 200
    assert attributes["gateway.llm.route"] == "gpt-4o-mini"
    assert attributes["gateway.llm.target"] == f"{upstream.base_url} fake-model"
    assert attributes["gateway.llm.attempts"] == 1
    assert attributes["gen_ai.request.model"] == "fake-model" and attributes["gen_ai.response.model"] == "fake-model"
    assert attributes["gen_ai.provider.name"] == "openai" and attributes["gen_ai.request.stream"] is False
    assert (attributes["gen_ai.usage.input_tokens"], attributes["gen_ai.usage.output_tokens"]) == (2, 6)
    assert "gen_ai.input.messages" not in attributes and "gateway.auth.key_id" not in attributes  # capture/auth off
    assert "error.type" not in attributes


def test_stream_spans_carry_usage_and_time_to_first_chunk(gw: Gateway) -> None:
    body = {"model": "gpt-4o-mini", "messages": HELLO, "stream": True, "stream_options": {"include_usage": True}}
    with raw_client(gw) as client:
        assert client.post("/v1/chat/completions", json=body).status_code == 200

    server, (call,) = _split(gw.wait_spans(_both_ended))
    assert call.attributes["gen_ai.request.stream"] is True
    assert call.attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert (call.attributes["gen_ai.usage.input_tokens"], call.attributes["gen_ai.usage.output_tokens"]) == (2, 3)
    assert 0 < call.attributes["gen_ai.response.time_to_first_chunk"] < (call.end_time - call.start_time) / 1e9
    assert server.attributes["gen_ai.request.stream"] is True
    assert (
        server.attributes["gen_ai.response.time_to_first_chunk"]
        >= call.attributes["gen_ai.response.time_to_first_chunk"]
    )
    assert server.attributes["gen_ai.usage.output_tokens"] == 3
    assert server.end_time >= call.end_time


def test_retries_and_fallback_are_visible(gw: Gateway) -> None:
    with raw_client(gw) as client:
        assert (
            client.post("/v1/chat/completions", json={"model": "with-fallback", "messages": HELLO}).status_code == 200
        )

    server, calls = _split(gw.wait_spans(lambda s: _both_ended(s) and len(s) == 4))
    assert [c.attributes["gateway.llm.attempt"] for c in calls] == [1, 2, 3]
    assert [c.attributes["gateway.llm.fallback"] for c in calls] == [False, False, True]
    assert [c.attributes["gen_ai.request.model"] for c in calls] == ["fake-model@status=500"] * 2 + ["fake-model"]
    assert [c.attributes.get("error.type") for c in calls] == ["500", "500", None]
    assert [c.status.status_code for c in calls] == [StatusCode.ERROR, StatusCode.ERROR, StatusCode.UNSET]
    assert all(c.parent.span_id == server.context.span_id for c in calls)
    assert server.attributes["gateway.llm.attempts"] == 3
    assert server.attributes["gateway.llm.target"].endswith(" fake-model")
    assert server.status.status_code is StatusCode.UNSET


@pytest.mark.parametrize(
    ("route", "status", "error_type"),
    [("always-500", 502, "503"), ("slow", 504, "timeout"), ("nope", 404, "model_not_found")],
)
def test_failures_mark_the_server_span(gw: Gateway, route: str, status: int, error_type: str) -> None:
    with raw_client(gw) as client:
        assert client.post("/v1/chat/completions", json={"model": route, "messages": HELLO}).status_code == status

    spans = gw.wait_spans(lambda s: any(x.kind is SpanKind.SERVER for x in s))
    (server,) = [s for s in spans if s.kind is SpanKind.SERVER]
    assert server.attributes["http.response.status_code"] == status
    assert server.attributes["error.type"] == error_type
    assert server.status.status_code is (StatusCode.ERROR if status >= 500 else StatusCode.UNSET)
    if status >= 500:
        assert server.attributes["gateway.llm.route"] == route
        assert all(c.status.status_code is StatusCode.ERROR for c in spans if c.kind is SpanKind.CLIENT)
    else:  # no route: the trace store's sink skips it
        assert "gateway.llm.route" not in server.attributes


def test_embeddings_span(gw: Gateway) -> None:
    with raw_client(gw) as client:
        body = {"model": "text-embedding-3-small", "input": "some text", "encoding_format": "float", "dimensions": 5}
        assert client.post("/v1/embeddings", json=body).status_code == 200
    server, (call,) = _split(gw.wait_spans(_both_ended))
    assert server.name == "POST /v1/embeddings" and call.name == "embeddings fake-embedding"
    assert call.attributes["gen_ai.embeddings.dimension.count"] == 5
    assert call.attributes["gen_ai.request.encoding_formats"] == ("float",)
    assert call.attributes["gen_ai.usage.input_tokens"] == 2


@pytest.fixture(scope="module")
def capturing(fake_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    llm = {
        "capture_content": True,
        "routes": [
            {"name": "gpt-4o-mini", "targets": [target(fake_upstream)]},
            {"name": "short", "capture_max_chars": 40, "targets": [target(fake_upstream)]},
        ],
    }
    with running_gateway(Path(tmp_path_factory.mktemp("capture")), llm) as gw:
        yield gw


def test_content_capture_when_configured(capturing: Gateway) -> None:
    capturing.exporter.clear()
    messages = [{"role": "system", "content": "Be brief."}, *HELLO]
    with raw_client(capturing) as client:
        body = {"model": "gpt-4o-mini", "messages": messages, "stream": True}
        assert client.post("/v1/chat/completions", json=body).status_code == 200

    server, (call,) = _split(capturing.wait_spans(_both_ended))
    expected_input = [
        {"role": "system", "parts": [{"type": "text", "content": "Be brief."}]},
        {"role": "user", "parts": [{"type": "text", "content": "Hello gateway"}]},
    ]
    expected_output = [
        {"role": "assistant", "parts": [{"type": "text", "content": "Echo: Hello gateway"}], "finish_reason": "stop"}
    ]
    for span in (server, call):
        assert orjson.loads(span.attributes["gen_ai.input.messages"]) == expected_input
        assert orjson.loads(span.attributes["gen_ai.output.messages"]) == expected_output
    # MLflow's request and response columns (OpenAI chat shapes), on the SERVER span only.
    assert orjson.loads(server.attributes["mlflow.spanInputs"]) == {"messages": messages}
    answer = {"role": "assistant", "content": "Echo: Hello gateway"}
    expected_outputs = {"choices": [{"index": 0, "message": answer, "finish_reason": "stop"}]}
    assert orjson.loads(server.attributes["mlflow.spanOutputs"]) == expected_outputs
    assert not any(name.startswith("mlflow.") for name in call.attributes)


def test_captured_content_is_truncated(capturing: Gateway) -> None:
    capturing.exporter.clear()
    with raw_client(capturing) as client:
        body = {"model": "short", "messages": [{"role": "user", "content": "word " * 100}]}
        assert client.post("/v1/chat/completions", json=body).status_code == 200
    server, _ = _split(capturing.wait_spans(_both_ended))
    assert len(server.attributes["gen_ai.input.messages"]) == 40
    assert server.attributes["gen_ai.input.messages"].startswith('[{"role":"user","parts":[{"type":"text"')
    assert server.attributes["mlflow.spanInputs"] == '{"messages":[{"role":"user","content":"w'  # 40 characters


def test_captured_tool_call_stream(capturing: Gateway) -> None:
    capturing.exporter.clear()
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    body = {"model": "gpt-4o-mini", "messages": HELLO, "tools": [tool], "stream": True, "fake": {"tool_call_deltas": 4}}
    with raw_client(capturing) as client:
        assert client.post("/v1/chat/completions", json=body).status_code == 200
    server, (call,) = _split(capturing.wait_spans(_both_ended))
    (message,) = orjson.loads(call.attributes["gen_ai.output.messages"])
    assert message["finish_reason"] == "tool_calls"
    assert message["parts"] == [{"type": "tool_call", "id": "call_0", "name": "lookup", "arguments": '{"text": "xx"}'}]
    (choice,) = orjson.loads(server.attributes["mlflow.spanOutputs"])["choices"]
    function = {"name": "lookup", "arguments": '{"text": "xx"}'}
    assert choice["message"]["tool_calls"] == [{"id": "call_0", "type": "function", "function": function}]
