"""SSE pass-through at the byte level: event counts, the terminal error event, client disconnects."""

from __future__ import annotations

import orjson

from tests.llm.conftest import FakeUpstream, Gateway, raw_client, wait_until

HELLO = [{"role": "user", "content": "Hello gateway"}]


def _events(text: str) -> list[str]:
    return [event for event in text.split("\n\n") if event]


def test_each_upstream_event_is_one_event_out(gw: Gateway, upstream: FakeUpstream) -> None:
    body = {"model": "gpt-4o-mini", "messages": HELLO, "stream": True, "fake": {"words": 40}}
    with raw_client(gw) as client:
        answer = client.post("/v1/chat/completions", json=body)

    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/event-stream")
    events = _events(answer.text)
    (stream,) = upstream.recorder.streams
    assert len(events) == stream.events_sent == 40 + 3  # role chunk, 40 words, finish chunk, [DONE]
    assert events[-1] == "data: [DONE]"


def test_failure_after_first_byte_ends_with_exactly_one_error_event(gw: Gateway, upstream: FakeUpstream) -> None:
    body = {"model": "gpt-4o-mini", "messages": HELLO, "stream": True, "fake": {"break_after": 2}}
    with raw_client(gw) as client:
        answer = client.post("/v1/chat/completions", json=body)

    assert answer.status_code == 200  # the status line went out with the first event
    events = _events(answer.text)
    assert len(events) == 3
    assert all("error" not in orjson.loads(e.removeprefix("data: ")) for e in events[:2])
    error = orjson.loads(events[2].removeprefix("data: "))["error"]
    assert error["type"] == "upstream_error" and error["code"] == "upstream_stream_interrupted"
    assert "mid-stream" in error["message"]


def test_client_disconnect_cancels_the_upstream_stream(gw: Gateway, upstream: FakeUpstream) -> None:
    body = {
        "model": "gpt-4o-mini",
        "messages": HELLO,
        "stream": True,
        "fake": {"words": 400, "chunk_delay": 0.02},  # about 8 s if nobody stops it
    }
    with raw_client(gw) as client, client.stream("POST", "/v1/chat/completions", json=body) as answer:
        lines = answer.iter_lines()
        received = [next(lines) for _ in range(6)]
        assert any(line.startswith("data: ") for line in received)
    # The client closed its connection: the gateway must stop the upstream, well before its 400 events.
    (stream,) = upstream.recorder.streams
    wait_until(lambda: stream.cancelled, timeout_s=5, what="the upstream stream cancelled")
    assert not stream.completed and stream.events_sent < 400
    spans = gw.wait_spans(lambda s: any(x.name == "POST /v1/chat/completions" for x in s))
    (server,) = [s for s in spans if s.name == "POST /v1/chat/completions"]
    assert server.attributes["error.type"] == "client_disconnected"


def test_streamed_completions_pass_through(gw: Gateway, upstream: FakeUpstream) -> None:
    body = {"model": "gpt-4o-mini", "prompt": "one two three", "stream": True}
    with raw_client(gw) as client:
        answer = client.post("/v1/completions", json=body)
    events = _events(answer.text)
    (stream,) = upstream.recorder.streams
    assert len(events) == stream.events_sent and events[-1] == "data: [DONE]"
