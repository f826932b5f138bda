"""The official openai SDK (sync and async) against a real gateway and the fake upstream on loopback."""

from __future__ import annotations

import httpx
import openai
import orjson
import pytest

from tests.llm.conftest import PROVIDER_KEY, FakeUpstream, Gateway
from tests.llm.sdk import SDK, SDK_KINDS

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
HELLO = [{"role": "user", "content": "Hello gateway"}]


@pytest.fixture(params=SDK_KINDS)
def sdk(request: pytest.FixtureRequest, gw: Gateway) -> SDK:
    return SDK(request.param, gw.v1)


def test_chat_completion(sdk: SDK, upstream: FakeUpstream) -> None:
    answer = sdk.chat(model="gpt-4o-mini", messages=HELLO, temperature=0.2, extra_body={"x_vendor_field": {"a": 1}})

    assert answer.choices[0].message.content == "Echo: Hello gateway"
    assert answer.choices[0].finish_reason == "stop"
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (2, 3)
    (received,) = upstream.recorder.requests
    body = received.json()
    assert body["model"] == "fake-model"  # the route's upstream model, nothing else changed
    assert body["x_vendor_field"] == {"a": 1} and body["temperature"] == 0.2 and body["messages"] == HELLO
    assert received.headers["authorization"] == f"Bearer {PROVIDER_KEY}"  # the provider key, not the client's


def test_chat_with_n_choices_and_response_format(sdk: SDK, upstream: FakeUpstream) -> None:
    answer = sdk.chat(model="gpt-4o-mini", messages=HELLO, n=2, response_format={"type": "json_object"})

    assert [c.index for c in answer.choices] == [0, 1]
    assert upstream.recorder.requests[0].json()["response_format"] == {"type": "json_object"}


def test_streaming_with_include_usage(sdk: SDK, upstream: FakeUpstream) -> None:
    chunks = sdk.chat_stream(model="gpt-4o-mini", messages=HELLO, stream_options={"include_usage": True})

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo: Hello gateway"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 3
    (stream,) = upstream.recorder.streams
    assert stream.completed and len(chunks) == stream.events_sent - 1  # every event but [DONE] reached the SDK


def test_tool_call(sdk: SDK) -> None:
    answer = sdk.chat(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Weather in Paris?"}], tools=[WEATHER_TOOL]
    )

    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather" and orjson.loads(call.function.arguments) == {"text": "x"}


def test_tool_result_round_trip(sdk: SDK) -> None:
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_0",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_0", "content": "sunny"},
    ]
    answer = sdk.chat(model="gpt-4o-mini", messages=messages, tools=[WEATHER_TOOL])
    assert answer.choices[0].message.content == "Tool said: sunny"


def test_streamed_tool_call(sdk: SDK) -> None:
    chunks = sdk.chat_stream(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Weather?"}], tools=[WEATHER_TOOL],
        extra_body={"fake": {"tool_call_deltas": 7}},
    )  # fmt: skip

    deltas = [c.choices[0].delta.tool_calls[0] for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    assert len(deltas) == 7
    assert deltas[0].function.name == "get_weather"
    assert orjson.loads("".join(d.function.arguments for d in deltas)) == {"text": "xxxxx"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_500_delta_tool_call_stream_arrives_as_500_events(sdk: SDK, upstream: FakeUpstream) -> None:
    chunks = sdk.chat_stream(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Weather?"}], tools=[WEATHER_TOOL],
        extra_body={"fake": {"tool_call_deltas": 500}}, stream_options={"include_usage": True},
    )  # fmt: skip

    with_tool_calls = [c for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    assert len(with_tool_calls) == 500
    (stream,) = upstream.recorder.streams
    assert len(chunks) == stream.events_sent - 1 == 502  # 500 deltas, the finish chunk, the usage chunk ([DONE] aside)


@pytest.mark.parametrize("encoding_format", [None, "float"])
def test_embeddings(sdk: SDK, upstream: FakeUpstream, encoding_format: str | None) -> None:
    extra = {"encoding_format": encoding_format} if encoding_format else {}
    answer = sdk.embeddings(model="text-embedding-3-small", input=["first text", "second"], dimensions=4, **extra)

    assert [d.index for d in answer.data] == [0, 1]
    assert all(len(d.embedding) == 4 for d in answer.data)
    assert answer.usage.prompt_tokens == 3
    sent = upstream.recorder.requests[0].json()
    assert sent["model"] == "fake-embedding" and sent["dimensions"] == 4
    if encoding_format is None:  # the SDK asks for base64 by default and decodes it: same vector as floats
        assert sent["encoding_format"] == "base64"
        body = {"model": "text-embedding-3-small", "input": ["first text"], "dimensions": 4, "encoding_format": "float"}
        floats = httpx.post(sdk.base_url + "/embeddings", json=body).json()["data"][0]["embedding"]
        assert answer.data[0].embedding == pytest.approx(floats, rel=1e-6)


def test_completions(sdk: SDK) -> None:
    answer = sdk.completion(model="gpt-4o-mini", prompt="Say this is a test")
    assert answer.choices[0].text == "Echo: Say this is a test"
    assert answer.usage.prompt_tokens == 5

    chunks = sdk.completion_stream(model="gpt-4o-mini", prompt="Say this", stream_options={"include_usage": True})
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "Echo: Say this"
    assert chunks[-1].usage.completion_tokens == 3


def test_models_list_names_the_routes(sdk: SDK) -> None:
    ids = sdk.model_ids()
    assert ids[:3] == ["gpt-4o-mini", "fake-model", "text-embedding-3-small"] and "with-fallback" in ids


def test_upstream_500_is_retried_then_served_by_the_fallback_target(sdk: SDK, upstream: FakeUpstream) -> None:
    answer = sdk.chat(model="with-fallback", messages=HELLO)

    assert answer.choices[0].message.content == "Echo: Hello gateway"
    models = [r.json()["model"] for r in upstream.recorder.requests]
    assert models == ["fake-model@status=500", "fake-model@status=500", "fake-model"]  # retries: 1, then fallback


def test_connection_refused_falls_back(sdk: SDK, upstream: FakeUpstream) -> None:
    answer = sdk.chat(model="dead-first", messages=HELLO)
    assert answer.choices[0].message.content == "Echo: Hello gateway"
    assert len(upstream.recorder.requests) == 1  # the first target never answered


def test_429_retry_after_is_honoured(sdk: SDK, upstream: FakeUpstream) -> None:
    answer = sdk.chat(model="rate-limited", messages=HELLO)

    assert answer.choices[0].message.content == "Echo: Hello gateway"
    first, second = upstream.recorder.requests
    # Retry-After: 1 outweighs the route's 10-50 ms backoff; the retry waited for it.
    assert second.at - first.at >= 0.95


def test_upstream_failure_after_retries_is_502_naming_the_status(sdk: SDK, upstream: FakeUpstream) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        sdk.chat(model="always-500", messages=HELLO)

    assert caught.value.status_code == 502
    assert "HTTP 503" in caught.value.message and "4 attempt(s)" in caught.value.message
    assert caught.value.code == "upstream_503"
    assert len(upstream.recorder.requests) == 4


def test_upstream_rejecting_the_provider_key_is_502_not_401(sdk: SDK) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        sdk.chat(model="bad-key", messages=HELLO)
    assert caught.value.status_code == 502 and "HTTP 401" in caught.value.message


def test_timeout_gives_504(sdk: SDK) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        sdk.chat(model="slow", messages=HELLO)

    assert caught.value.status_code == 504
    assert caught.value.code == "upstream_timeout" and "timeout_s=0.5" in caught.value.message


def test_unknown_model_is_404(sdk: SDK) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        sdk.chat(model="no-such-model", messages=HELLO)

    assert caught.value.code == "model_not_found"
    assert "'no-such-model'" in caught.value.message and "gpt-4o-mini" in caught.value.message


def test_upstream_4xx_reaches_the_client_as_sent(sdk: SDK) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat(model="gpt-4o-mini", messages=HELLO, extra_body={"fake": {"status": 400}})
    assert caught.value.body == {"message": "fake upstream error 400", "type": "invalid_request_error", "code": None}


def test_failure_after_the_first_streamed_byte_ends_with_one_error_event(sdk: SDK, upstream: FakeUpstream) -> None:
    with pytest.raises(openai.APIError) as caught:
        sdk.chat_stream(model="gpt-4o-mini", messages=HELLO, extra_body={"fake": {"break_after": 3}})

    assert "mid-stream" in caught.value.message
    (stream,) = upstream.recorder.streams
    assert stream.events_sent == 3 and not stream.completed
