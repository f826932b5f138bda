"""Anthropic's Messages API through the proxy, with the official ``anthropic`` SDK: create and stream (text,
usage, tool use), token counts, the target's key and version on the upstream request (never the client's),
Anthropic's error shape for what the gateway answers itself, spans and trace summaries."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from opentelemetry.trace import SpanKind

from tests.conftest import IN_CI
from tests.llm.conftest import (
    CLIENT_KEY,
    CLIENT_KEY_DIGEST,
    PROVIDER_KEY,
    FakeUpstream,
    Gateway,
    running_gateway,
    target,
    wait_until,
)

if IN_CI:  # CI must run these: the dev extras install the SDK
    import anthropic
else:
    anthropic = pytest.importorskip("anthropic", reason="the anthropic SDK is not installed (pip install anthropic)")

HELLO = [{"role": "user", "content": "Hello Claude"}]
WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.fixture(scope="module")
def claude_gateway(fake_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    llm = {
        "capture_content": True,  # the widest surface: content on spans and in the store
        "routes": [
            {"name": "claude", "provider": "anthropic", "targets": [target(fake_upstream, "claude-fake")]},
            {
                "name": "claude-cached",
                "provider": "anthropic",
                "targets": [
                    target(fake_upstream, "claude-fake@cache_read=5,cache_write=3", anthropic_version="2024-01-01")
                ],
            },
            {"name": "gpt-4o-mini", "targets": [target(fake_upstream)]},
            {
                "name": "claude-fails",
                "provider": "anthropic",
                "retries": 0,
                "targets": [target(fake_upstream, "claude-fake@status=401,echo_key=1")],
            },
        ],
    }
    auth = {"keys": [CLIENT_KEY_DIGEST]}
    with running_gateway(Path(tmp_path_factory.mktemp("claude")), llm, auth) as gw:
        yield gw


@pytest.fixture
def gw(claude_gateway: Gateway) -> Gateway:
    claude_gateway.exporter.clear()
    return claude_gateway


def _client(gw: Gateway, **options: Any) -> Any:
    return anthropic.Anthropic(base_url=gw.base_url, api_key=CLIENT_KEY, max_retries=0, timeout=30, **options)


def _spans(gw: Gateway, server_name: str = "POST /v1/messages") -> tuple[Any, Any]:
    spans = gw.wait_spans(lambda s: any(x.name == server_name for x in s) and any(x.kind is SpanKind.CLIENT for x in s))
    (server,) = [s for s in spans if s.name == server_name]
    (call,) = [s for s in spans if s.kind is SpanKind.CLIENT]
    return server, call


def test_create_answers_the_text_and_usage_the_upstream_sent(gw: Gateway, upstream: FakeUpstream) -> None:
    with _client(gw) as client:
        message = client.messages.create(
            model="claude", max_tokens=64, messages=HELLO, extra_body={"temperature": 0.3, "top_k": 5}
        )
    assert message.content[0].text == "Echo: Hello Claude" and message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (2, 3)
    (sent,) = upstream.recorder.requests
    assert sent.path == "/v1/messages" and sent.json()["model"] == "claude-fake"
    assert sent.headers["x-api-key"] == PROVIDER_KEY and sent.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in sent.headers  # the client's key stays with the gateway

    server, call = _spans(gw)
    assert call.name == "chat claude-fake"
    attributes = dict(call.attributes)
    assert attributes["gen_ai.provider.name"] == "anthropic" and attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.response.id"] == message.id and attributes["gen_ai.response.model"] == "claude-fake"
    assert (attributes["gen_ai.usage.input_tokens"], attributes["gen_ai.usage.output_tokens"]) == (2, 3)
    assert attributes["gen_ai.response.finish_reasons"] == ("end_turn",)
    assert (attributes["gen_ai.request.max_tokens"], attributes["gen_ai.request.top_k"]) == (64, 5)
    assert server.attributes["gateway.auth.key_id"] == CLIENT_KEY_DIGEST[:12]
    assert server.attributes["gen_ai.provider.name"] == "anthropic"


def test_cache_tokens_count_in_the_input_and_the_target_sets_the_version(gw: Gateway, upstream: FakeUpstream) -> None:
    with _client(gw) as client:
        message = client.messages.create(model="claude-cached", max_tokens=64, messages=HELLO)
    assert (message.usage.cache_read_input_tokens, message.usage.cache_creation_input_tokens) == (5, 3)
    assert upstream.recorder.requests[0].headers["anthropic-version"] == "2024-01-01"
    _, call = _spans(gw)
    assert call.attributes["gen_ai.usage.input_tokens"] == 2 + 5 + 3  # the conventions' Anthropic rule
    assert call.attributes["gen_ai.usage.cache_read.input_tokens"] == 5
    assert call.attributes["gen_ai.usage.cache_write.input_tokens"] == 3


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_stream_gives_the_text_and_usage(gw: Gateway, upstream: FakeUpstream, kind: str) -> None:
    kwargs = {"model": "claude", "max_tokens": 64, "messages": [{"role": "user", "content": "one two three four"}]}
    if kind == "sync":
        with _client(gw) as client, client.messages.stream(**kwargs) as stream:
            text = "".join(stream.text_stream)
            final = stream.get_final_message()
    else:
        import asyncio

        async def main() -> tuple[str, Any]:
            options = {"api_key": CLIENT_KEY, "max_retries": 0, "timeout": 30}
            async with (
                anthropic.AsyncAnthropic(base_url=gw.base_url, **options) as client,
                client.messages.stream(**kwargs) as stream,
            ):
                return "".join([t async for t in stream.text_stream]), await stream.get_final_message()

        text, final = asyncio.run(main())
    assert text == final.content[0].text == "Echo: one two three four"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (4, 5)
    (record,) = upstream.recorder.streams
    assert record.completed and record.events_sent == 5 + 6  # start, block start, ping, 5 deltas, stop, delta, stop

    server, call = _spans(gw)
    assert (call.attributes["gen_ai.usage.input_tokens"], call.attributes["gen_ai.usage.output_tokens"]) == (4, 5)
    assert call.attributes["gen_ai.response.finish_reasons"] == ("end_turn",)
    assert call.attributes["gen_ai.request.stream"] is True
    assert call.attributes["gen_ai.response.time_to_first_chunk"] > 0
    assert server.attributes["gen_ai.response.id"] == final.id


def test_stream_events_pass_one_to_one(gw: Gateway, upstream: FakeUpstream) -> None:
    body = {"model": "claude", "max_tokens": 64, "messages": HELLO, "stream": True, "fake": {"words": 30}}
    headers = {"x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01"}
    answer = httpx.post(gw.base_url + "/v1/messages", json=body, headers=headers, timeout=30)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/event-stream")
    events = [e for e in answer.text.split("\n\n") if e]
    (record,) = upstream.recorder.streams
    assert len(events) == record.events_sent == 30 + 6
    assert events[0].startswith("event: message_start\n") and events[-1].startswith("event: message_stop\n")


@pytest.mark.parametrize("stream", [False, True])
def test_tool_use_blocks_pass_untouched(gw: Gateway, upstream: FakeUpstream, stream: bool) -> None:
    kwargs = {
        "model": "claude",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "Paris?"}],
        "tools": [WEATHER],
    }
    with _client(gw) as client:
        if stream:
            with client.messages.stream(**kwargs) as events:
                message = events.get_final_message()
        else:
            message = client.messages.create(**kwargs)
        (block,) = message.content
        assert (block.type, block.name, block.input) == ("tool_use", "get_weather", {"text": "x"})
        assert message.stop_reason == "tool_use"
        result = {"type": "tool_result", "tool_use_id": block.id, "content": "sunny"}
        followed = client.messages.create(
            model="claude", max_tokens=64, tools=[WEATHER],
            messages=[*kwargs["messages"], {"role": "assistant", "content": [block.model_dump()]},
                      {"role": "user", "content": [result]}],
        )  # fmt: skip
    assert followed.content[0].text == "Tool said: sunny"
    assert upstream.recorder.requests[0].json()["tools"] == [WEATHER]


def test_count_tokens(gw: Gateway, upstream: FakeUpstream) -> None:
    with _client(gw) as client:
        counted = client.messages.count_tokens(model="claude", system="Be brief.", messages=HELLO)
    assert counted.input_tokens == 4
    assert upstream.recorder.requests[0].path == "/v1/messages/count_tokens"
    server, call = _spans(gw, "POST /v1/messages/count_tokens")
    assert server.attributes["gen_ai.operation.name"] == "count_tokens"
    assert "gen_ai.usage.input_tokens" not in call.attributes  # counted, not used


def _body(model: str) -> dict[str, Any]:
    return {"model": model, "max_tokens": 8, "messages": HELLO}


@pytest.mark.parametrize(
    ("body", "headers", "status", "error_type", "fragment"),
    [
        (_body("nope"), {}, 404, "not_found_error", "'nope' does not exist"),
        (_body("gpt-4o-mini"), {}, 400, "invalid_request_error", "provider: anthropic"),
        ({"model": "claude", "max_tokens": 8}, {}, 400, "invalid_request_error", "'messages' is required"),
        (_body("claude"), {"x-api-key": ""}, 401, "authentication_error", "x-api-key"),
        (_body("claude"), {"x-api-key": "wrong"}, 401, "authentication_error", "Invalid"),
        (_body("claude-fails"), {}, 502, "api_error", "answered HTTP 401"),
    ],
)  # fmt: skip
def test_errors_the_gateway_answers_are_in_anthropics_shape(
    gw: Gateway, upstream: FakeUpstream, body: Any, headers: dict[str, str], status: int, error_type: str, fragment: str
) -> None:
    sent = {"x-api-key": CLIENT_KEY, **headers}
    answer = httpx.post(gw.base_url + "/v1/messages", json=body, headers={k: v for k, v in sent.items() if v})
    assert answer.status_code == status, answer.text
    error = answer.json()
    assert error["type"] == "error" and error["error"]["type"] == error_type
    assert fragment in error["error"]["message"]


def test_the_sdk_sees_the_gateways_errors_as_its_own_classes(gw: Gateway) -> None:
    with _client(gw) as client, pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.create(model="nope", max_tokens=8, messages=HELLO)
    assert "'nope' does not exist" in str(caught.value)
    with (
        pytest.raises(anthropic.AuthenticationError),
        anthropic.Anthropic(base_url=gw.base_url, api_key="wrong", max_retries=0) as client,
    ):
        client.messages.create(model="claude", max_tokens=8, messages=HELLO)


def test_anthropic_beta_is_forwarded(gw: Gateway, upstream: FakeUpstream) -> None:
    with _client(gw, default_headers={"anthropic-beta": "prompt-caching-2024-07-31"}) as client:
        client.messages.create(model="claude", max_tokens=8, messages=HELLO)
    assert upstream.recorder.requests[0].headers["anthropic-beta"] == "prompt-caching-2024-07-31"


def test_captured_content_reaches_the_trace_summary(gw: Gateway, upstream: FakeUpstream) -> None:
    messages = [{"role": "user", "content": [{"type": "text", "text": "Weather?"}]}]
    with _client(gw) as client:
        client.messages.create(model="claude", max_tokens=64, system="Be brief.", messages=messages, tools=[WEATHER])
        with client.messages.stream(model="claude", max_tokens=64, messages=HELLO) as stream:
            stream.get_final_message()
    headers = {"authorization": f"Bearer {CLIENT_KEY}"}
    with httpx.Client(base_url=gw.base_url, headers=headers, timeout=10) as client:

        def both() -> tuple[dict[str, Any], dict[str, Any]] | None:
            rows = client.get("/api/traces", params={"route": "claude"}).json()["traces"]  # newest first
            whole = next((r for r in rows if "Be brief." in orjson.dumps(r["input_content"]).decode()), None)
            later = [r for r in rows if whole and r["started_at"] >= whole["started_at"] and r["stream"]]
            return (later[-1], whole) if whole and later else None

        streamed, whole = wait_until(both, what="the two summaries")
    assert whole["input_content"] == [
        {"role": "system", "parts": [{"type": "text", "content": "Be brief."}]},
        {"role": "user", "parts": [{"type": "text", "content": "Weather?"}]},
    ]
    (output,) = whole["output_content"]
    assert output["finish_reason"] == "tool_use"
    assert output["parts"][0]["type"] == "tool_call" and output["parts"][0]["arguments"] == {"text": "x"}
    assert streamed["output_content"] == [
        {"role": "assistant", "parts": [{"type": "text", "content": "Echo: Hello Claude"}], "finish_reason": "end_turn"}
    ]
    assert streamed["provider"] == "anthropic" and streamed["stream"] is True and streamed["time_to_first_chunk_ms"] > 0


def test_the_provider_key_appears_nowhere(
    gw: Gateway, upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    with _client(gw) as client:
        seen.append(client.messages.create(model="claude", max_tokens=8, messages=HELLO).model_dump_json())
        with client.messages.stream(model="claude", max_tokens=8, messages=HELLO) as stream:
            seen.append(stream.get_final_message().model_dump_json())
    headers = {"x-api-key": CLIENT_KEY}
    for body in (
        {"model": "claude-fails", "max_tokens": 8, "messages": HELLO},  # upstream 401 quoting the key -> 502
        {"model": "claude", "max_tokens": 8, "messages": HELLO, "fake": {"status": 400, "echo_key": True}},
        {"model": "claude", "max_tokens": 8, "messages": HELLO, "stream": True, "fake": {"break_after": 2}},
    ):
        answer = httpx.post(gw.base_url + "/v1/messages", json=body, headers=headers, timeout=30)
        seen.append(f"{answer.status_code} {answer.headers} {answer.text}")
    assert "[redacted]" in seen[-3] and "[redacted]" in seen[-2]  # the upstream did quote it
    assert seen[-1].startswith("200") and "event: error" in seen[-1]
    with httpx.Client(base_url=gw.base_url, headers={"authorization": f"Bearer {CLIENT_KEY}"}, timeout=10) as client:
        summaries = wait_until(lambda: len(t := client.get("/api/traces").json()["traces"]) >= 5 and t, what="rows")
        seen.append(orjson.dumps(summaries).decode())
    spans = gw.wait_spans(lambda s: len([x for x in s if x.kind is SpanKind.SERVER]) >= 5)
    exported = orjson.dumps([[dict(s.attributes or {}), s.status.description] for s in spans]).decode()
    logs = caplog.text + "\n".join(str(r.args) for r in caplog.records)
    assert "gen_ai.input.messages" in exported
    assert PROVIDER_KEY not in exported and PROVIDER_KEY not in logs
    assert not [text for text in seen if PROVIDER_KEY in text]


def test_a_failure_mid_stream_ends_with_one_error_event(gw: Gateway, upstream: FakeUpstream) -> None:
    body = {"model": "claude", "max_tokens": 8, "messages": HELLO, "stream": True, "fake": {"break_after": 3}}
    answer = httpx.post(gw.base_url + "/v1/messages", json=body, headers={"x-api-key": CLIENT_KEY}, timeout=30)
    events = [e for e in answer.text.split("\n\n") if e]
    assert len(events) == 4 and events[-1].startswith("event: error\n")
    error = orjson.loads(events[-1].split("data: ", 1)[1])
    assert error["type"] == "error" and error["error"]["type"] == "api_error"
    assert "mid-stream" in error["error"]["message"]
    with (
        _client(gw) as client,
        pytest.raises(anthropic.APIStatusError),
        client.messages.stream(
            model="claude", max_tokens=8, messages=HELLO, extra_body={"fake": {"break_after": 3}}
        ) as s,
    ):
        s.get_final_message()


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/responses"])
def test_an_anthropic_route_on_an_openai_endpoint_is_a_400(gw: Gateway, upstream: FakeUpstream, path: str) -> None:
    body = {"model": "claude", "messages": HELLO, "input": "Hi"}
    answer = httpx.post(gw.base_url + path, json=body, headers={"authorization": f"Bearer {CLIENT_KEY}"})
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["code"] == "wrong_api" and "POST /v1/messages" in error["message"]
    assert upstream.recorder.requests == []


def test_the_sdk_lists_the_routes(gw: Gateway) -> None:
    with _client(gw) as client:
        assert {model.id for model in client.models.list()} >= {"claude", "claude-cached", "gpt-4o-mini"}
