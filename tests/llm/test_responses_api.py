"""The OpenAI Responses API through the proxy, with the official SDK: create (whole and streamed), tool calls,
follow-ups pinned to the target that created the response, prompts from our registry, spans and traces."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from loadtest.fake_upstream import Recorder
from loadtest.fake_upstream import create_app as create_fake_app
from tests.llm.conftest import FakeUpstream, Gateway, raw_client, running_gateway, target, wait_until
from tests.llm.sdk import SDK, SDK_KINDS
from tests.servers import run_app_in_thread

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.fixture(scope="module")
def second_upstream() -> Iterator[FakeUpstream]:
    """Another fake provider: it knows none of the first one's responses."""
    recorder = Recorder()
    with run_app_in_thread(create_fake_app(recorder)) as base_url:
        yield FakeUpstream(base_url + "/v1", recorder)


@pytest.fixture
def second(second_upstream: FakeUpstream) -> FakeUpstream:
    second_upstream.recorder.reset()
    return second_upstream


@pytest.fixture(scope="module")
def responses_gateway(
    fake_upstream: FakeUpstream, second_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    llm = {
        "routes": [
            {"name": "gpt-4o-mini", "targets": [target(fake_upstream)]},
            {"name": "captured", "capture_content": True, "targets": [target(fake_upstream)]},
            {
                # the first call fails on the first target, so its response is created by the second
                "name": "two-providers",
                "retries": 0,
                "targets": [target(fake_upstream, "fake-model@fail_first=1"), target(second_upstream)],
            },
        ]
    }
    with running_gateway(Path(tmp_path_factory.mktemp("responses")), llm) as gw:
        yield gw


@pytest.fixture
def gw(responses_gateway: Gateway) -> Gateway:
    responses_gateway.exporter.clear()
    return responses_gateway


def _split(gw: Gateway, server_name: str) -> tuple[ReadableSpan, list[ReadableSpan]]:
    spans = gw.wait_spans(lambda s: any(x.name == server_name for x in s) and any(x.kind is SpanKind.CLIENT for x in s))
    (server,) = [s for s in spans if s.name == server_name]
    clients = [
        s for s in spans if s.kind is SpanKind.CLIENT and s.parent and s.parent.span_id == server.context.span_id
    ]
    return server, clients


def _events(text: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for event in text.split("\n\n"):
        if not event:
            continue
        name, _, data = event.partition("\n")
        out.append((name.removeprefix("event: "), orjson.loads(data.removeprefix("data: "))))
    return out


@pytest.mark.parametrize("kind", SDK_KINDS)
def test_create_answers_the_text_and_the_spans_carry_usage_and_id(
    gw: Gateway, upstream: FakeUpstream, kind: str
) -> None:
    response = SDK(kind, gw.v1).responses(model="gpt-4o-mini", input="Hi", max_output_tokens=50, temperature=0.2)
    assert response.output_text == "Echo: Hi"
    assert (response.usage.input_tokens, response.usage.output_tokens) == (1, 2)
    sent = upstream.recorder.requests[-1]
    assert sent.path == "/v1/responses" and sent.json()["model"] == "fake-model" and sent.json()["input"] == "Hi"

    server, (call,) = _split(gw, "POST /v1/responses")
    assert call.name == "chat fake-model"
    attributes = dict(call.attributes)
    assert attributes["gen_ai.operation.name"] == "chat" and attributes["openai.api.type"] == "responses"
    assert attributes["gen_ai.response.id"] == response.id
    assert (attributes["gen_ai.usage.input_tokens"], attributes["gen_ai.usage.output_tokens"]) == (1, 2)
    assert attributes["gen_ai.usage.cache_read.input_tokens"] == 0
    assert attributes["gen_ai.request.max_tokens"] == 50 and attributes["gen_ai.request.temperature"] == 0.2
    assert attributes["gen_ai.response.finish_reasons"] == ("completed",)
    summary = dict(server.attributes)
    assert summary["gateway.llm.route"] == "gpt-4o-mini" and summary["gen_ai.response.id"] == response.id
    assert summary["http.response.status_code"] == 200 and summary["gen_ai.request.stream"] is False


def test_stream_relays_every_event_in_order_and_records_usage(gw: Gateway, upstream: FakeUpstream) -> None:
    body = {"model": "gpt-4o-mini", "input": "one two three", "stream": True, "fake": {"words": 20}}
    with raw_client(gw) as client:
        answer = client.post("/v1/responses", json=body)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/event-stream")
    events = _events(answer.text)
    (stream,) = upstream.recorder.streams
    assert len(events) == stream.events_sent == 20 + 8
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    assert all(name == data["type"] for name, data in events)
    assert events[0][0] == "response.created" and events[-1][0] == "response.completed"
    deltas = "".join(data["delta"] for name, data in events if name == "response.output_text.delta")
    assert deltas == events[-1][1]["response"]["output"][0]["content"][0]["text"]

    server, (call,) = _split(gw, "POST /v1/responses")
    usage = events[-1][1]["response"]["usage"]
    assert call.attributes["gen_ai.usage.input_tokens"] == usage["input_tokens"] == 3
    assert call.attributes["gen_ai.usage.output_tokens"] == usage["output_tokens"] == 20
    assert call.attributes["gen_ai.response.id"] == events[0][1]["response"]["id"]
    assert call.attributes["gen_ai.request.stream"] is True
    assert 0 < call.attributes["gen_ai.response.time_to_first_chunk"] <= (call.end_time - call.start_time) / 1e9
    assert server.attributes["gen_ai.response.time_to_first_chunk"] > 0


@pytest.mark.parametrize("kind", SDK_KINDS)
def test_sdk_stream_gives_the_same_events_and_text(gw: Gateway, upstream: FakeUpstream, kind: str) -> None:
    events = SDK(kind, gw.v1).responses_stream(model="gpt-4o-mini", input="stream me please")
    (stream,) = upstream.recorder.streams
    assert len(events) == stream.events_sent
    assert [e.type for e in events][:2] == ["response.created", "response.in_progress"]
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == events[-1].response.output_text == "Echo: stream me please"

    def helper(client: Any) -> Any:
        if isinstance(client, openai.OpenAI):
            with client.responses.stream(model="gpt-4o-mini", input="via the helper") as stream:
                return stream.get_final_response().output_text

        async def main() -> str:
            async with client.responses.stream(model="gpt-4o-mini", input="via the helper") as stream:
                return (await stream.get_final_response()).output_text

        return main()

    assert SDK(kind, gw.v1).call(helper) == "Echo: via the helper"


@pytest.mark.parametrize("stream", [False, True])
def test_tool_call_and_its_result(gw: Gateway, upstream: FakeUpstream, stream: bool) -> None:
    sdk = SDK("sync", gw.v1)
    kwargs = {"model": "gpt-4o-mini", "input": "Weather in Paris?", "tools": [WEATHER]}
    if stream:
        events = sdk.responses_stream(**kwargs)
        response = events[-1].response
        arguments = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
        assert arguments == response.output[0].arguments
    else:
        response = sdk.responses(**kwargs)
    call = response.output[0]
    assert (call.type, call.name, orjson.loads(call.arguments)) == ("function_call", "get_weather", {"text": "x"})
    result = [{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}]
    followed = sdk.responses(model="gpt-4o-mini", input=result, previous_response_id=response.id, tools=[WEATHER])
    assert followed.output_text == "Tool said: sunny"


def test_previous_response_id_reaches_the_target_that_created_it(
    gw: Gateway, upstream: FakeUpstream, second: FakeUpstream
) -> None:
    sdk = SDK("sync", gw.v1)
    first = sdk.responses(model="two-providers", input="Remember me")  # target 1 fails once: target 2 answers
    assert [r.path for r in upstream.recorder.requests] == ["/v1/responses"]  # the failed attempt
    for n in range(3):  # target 1 is healthy now, and would be tried first
        follow = sdk.responses(model="two-providers", input=f"And {n}?", previous_response_id=first.id)
        assert follow.output_text == f"Echo: And {n}?" and follow.previous_response_id == first.id
    assert len(upstream.recorder.requests) == 1
    assert [r.json().get("previous_response_id") for r in second.recorder.requests] == [None] + [first.id] * 3

    retrieved = sdk.call(lambda c: c.responses.retrieve(first.id))
    assert retrieved.id == first.id and retrieved.output_text == "Echo: Remember me"
    assert second.recorder.requests[-1].path == f"/v1/responses/{first.id}"
    assert len(upstream.recorder.requests) == 1
    server, (call,) = _split(gw, "GET /v1/responses/{response_id}")
    assert server.attributes["gen_ai.operation.name"] == "retrieve_response"
    assert server.attributes["gateway.llm.target"] == f"{second.base_url} fake-model"
    assert "gen_ai.usage.input_tokens" not in call.attributes  # the usage of the call that created it


def test_follow_ups_on_a_stored_response(gw: Gateway, upstream: FakeUpstream) -> None:
    sdk = SDK("sync", gw.v1)
    created = sdk.responses(model="gpt-4o-mini", input="Keep this", background=True)
    items = sdk.call(lambda c: list(c.responses.input_items.list(created.id)))
    assert [(i.type, i.role) for i in items] == [("message", "user")]
    assert sdk.call(lambda c: c.responses.cancel(created.id)).status == "cancelled"
    with raw_client(gw) as client:
        replay = client.get(f"/v1/responses/{created.id}", params={"stream": "true", "include[]": "x"})
    assert replay.headers["content-type"].startswith("text/event-stream")
    assert _events(replay.text)[-1][1]["response"]["id"] == created.id
    assert upstream.recorder.requests[-1].path == f"/v1/responses/{created.id}?stream=true&include%5B%5D=x"
    sdk.call(lambda c: c.responses.delete(created.id))
    assert upstream.recorder.requests[-1].method == "DELETE"
    with pytest.raises(openai.NotFoundError) as caught:  # forgotten with the response
        sdk.call(lambda c: c.responses.retrieve(created.id))
    assert created.id in caught.value.message


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/responses/resp_unknown", None),
        ("DELETE", "/v1/responses/resp_unknown", None),
        ("POST", "/v1/responses/resp_unknown/cancel", None),
        ("GET", "/v1/responses/resp_unknown/input_items", None),
        ("POST", "/v1/responses", {"model": "gpt-4o-mini", "input": "x", "previous_response_id": "resp_unknown"}),
        ("GET", "/v1/responses/resp%20unknown%3F", None),  # not an id: no upstream would know it
    ],
)
def test_an_unknown_response_id_is_a_404_naming_it(
    gw: Gateway, upstream: FakeUpstream, method: str, path: str, body: Any
) -> None:
    with raw_client(gw) as client:
        answer = client.request(method, path, json=body)
    assert answer.status_code == 404
    error = answer.json()["error"]
    assert error["code"] == "response_not_found" and error["type"] == "invalid_request_error"
    assert ("resp unknown?" if "%20" in path else "resp_unknown") in error["message"]
    assert upstream.recorder.requests == []


def test_a_provider_prompt_id_passes_through(gw: Gateway, upstream: FakeUpstream) -> None:
    prompt = {"id": "pmpt_abc123", "version": "2", "variables": {"city": "Paris"}}
    SDK("sync", gw.v1).responses(model="gpt-4o-mini", input="Hi", prompt=prompt)
    assert upstream.recorder.requests[-1].json()["prompt"] == prompt


def test_captured_content_reaches_the_trace_summary(gw: Gateway, upstream: FakeUpstream) -> None:
    sdk = SDK("sync", gw.v1)
    sdk.responses(model="captured", instructions="Be brief.", input="What is up?")
    sdk.responses_stream(model="captured", input=[{"role": "user", "content": [{"type": "input_text", "text": "Yo"}]}])
    with httpx.Client(base_url=gw.base_url, timeout=10) as client:
        rows = wait_until(
            lambda: len(t := client.get("/api/traces", params={"route": "captured"}).json()["traces"]) == 2 and t,
            what="two summaries",
        )
    streamed, whole = rows  # newest first
    assert whole["input_content"] == [
        {"role": "system", "parts": [{"type": "text", "content": "Be brief."}]},
        {"role": "user", "parts": [{"type": "text", "content": "What is up?"}]},
    ]
    assert whole["output_content"] == [
        {"role": "assistant", "parts": [{"type": "text", "content": "Echo: What is up?"}], "finish_reason": "completed"}
    ]
    assert streamed["input_content"] == [{"role": "user", "parts": [{"type": "text", "content": "Yo"}]}]
    assert streamed["output_content"][0]["parts"] == [{"type": "text", "content": "Echo: Yo"}]
    assert streamed["stream"] is True and streamed["time_to_first_chunk_ms"] > 0
    assert (streamed["input_tokens"], streamed["output_tokens"]) == (1, 2)
    assert whole["attributes"]["gen_ai.response.id"].startswith("resp_")


def test_prompt_from_our_registry_becomes_instructions_and_input(gw: Gateway, upstream: FakeUpstream) -> None:
    template = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Q: {{ question }}"},
    ]
    with httpx.Client(base_url=gw.base_url, timeout=10) as client:
        version = client.post("/api/prompts/qa-resp/versions", json={"template": template}).json()["version"]
        client.put("/api/prompts/qa-resp/aliases/production", json={"version": version}).raise_for_status()
    prompt = {"id": "prompts:/qa-resp@production", "variables": {"question": "2+2?"}}
    response = wait_until(
        lambda: _rendered(gw, prompt), what="the prompt in the gateway's cache"
    )  # the cache reloads on its own
    assert response.output_text == "Echo: And be quick."
    sent = upstream.recorder.requests[-1].json()
    assert "prompt" not in sent
    assert sent["instructions"] == "Answer briefly.\n\nBe nice."
    assert sent["input"] == [{"role": "user", "content": "Q: 2+2?"}, {"role": "user", "content": "And be quick."}]
    server, (call,) = _split(gw, "POST /v1/responses")
    for span in (server, call):
        assert (span.attributes["gen_ai.prompt.name"], span.attributes["gen_ai.prompt.version"]) == ("qa-resp", version)


def _rendered(gw: Gateway, prompt: dict[str, Any]) -> Any:
    gw.exporter.clear()
    try:
        return SDK("sync", gw.v1).responses(
            model="gpt-4o-mini", prompt=prompt, instructions="Be nice.", input="And be quick."
        )
    except openai.NotFoundError:
        return None


@pytest.mark.parametrize(
    ("prompt", "status", "fragment"),
    [
        ({"id": "prompts:/nope@production"}, 404, "nope"),
        ({"id": "prompts:/qa-resp@production", "version": "1"}, 400, "give one or the other"),
        ({"id": "prompts:/qa-resp@production", "variables": [1]}, 400, "'prompt.variables' must be an object"),
        ({"id": "prompts:/qa-resp", "extra": 1}, 400, "unknown key(s) extra"),
    ],
)
def test_prompt_errors(gw: Gateway, upstream: FakeUpstream, prompt: Any, status: int, fragment: str) -> None:
    with raw_client(gw) as client:
        answer = client.post("/v1/responses", json={"model": "gpt-4o-mini", "input": "x", "prompt": prompt})
    assert answer.status_code == status, answer.text
    assert fragment in answer.json()["error"]["message"]
    assert upstream.recorder.requests == []


def test_input_tokens_are_counted_through_the_route(gw: Gateway, upstream: FakeUpstream) -> None:
    counted = SDK("sync", gw.v1).call(lambda c: c.responses.input_tokens.count(model="gpt-4o-mini", input="a b c"))
    assert counted.input_tokens == 3
    sent = upstream.recorder.requests[-1]
    assert sent.path == "/v1/responses/input_tokens" and sent.json()["model"] == "fake-model"
    server, _ = _split(gw, "POST /v1/responses/input_tokens")
    assert server.attributes["gen_ai.operation.name"] == "count_tokens"
