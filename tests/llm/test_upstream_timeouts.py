"""Per-attempt timeouts of the upstream client: a silent target is retried elsewhere; a stream gone
silent mid-way ends with one SSE error event; neither leaves a 200 with an empty body."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from opentelemetry.trace import SpanKind, StatusCode

from tests.llm.conftest import FakeUpstream, Gateway, raw_client, running_gateway, target

HELLO = [{"role": "user", "content": "Hello gateway"}]


@pytest.fixture(scope="module")
def timeouts_gateway(fake_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    routes = {
        "routes": [
            {
                # read_timeout_s (0.3 s) fires long before timeout_s: the attempt fails, the fallback answers.
                "name": "silent-first",
                "read_timeout_s": 0.3,
                "timeout_s": 10,
                "retries": 0,
                "targets": [target(fake_upstream, "fake-model@delay=3"), target(fake_upstream)],
            },
            {
                "name": "stalls-mid-stream",
                "read_timeout_s": 0.3,
                "timeout_s": 10,
                "targets": [target(fake_upstream, "fake-model@chunk_delay=2")],
            },
        ]
    }
    with running_gateway(Path(tmp_path_factory.mktemp("llm-timeouts")), routes) as gw:
        yield gw


def test_read_timeout_fails_the_attempt_and_the_fallback_answers(
    timeouts_gateway: Gateway, upstream: FakeUpstream
) -> None:
    gw = timeouts_gateway
    gw.exporter.clear()
    with raw_client(gw) as client:
        answer = client.post("/v1/chat/completions", json={"model": "silent-first", "messages": HELLO})

    assert answer.status_code == 200
    assert answer.json()["choices"][0]["message"]["content"] == "Echo: Hello gateway"
    assert [r.json()["model"] for r in upstream.recorder.requests] == ["fake-model@delay=3", "fake-model"]
    spans = gw.wait_spans(lambda s: sum(x.kind is SpanKind.CLIENT for x in s) == 2 and len(s) == 3)
    first, second = sorted((s for s in spans if s.kind is SpanKind.CLIENT), key=lambda s: s.start_time or 0)
    assert "Timeout" in str(first.attributes["error.type"]) and first.status.status_code is StatusCode.ERROR
    assert second.attributes["gateway.llm.fallback"] is True and "error.type" not in second.attributes


def test_stream_silent_mid_way_ends_with_one_timeout_event(timeouts_gateway: Gateway, upstream: FakeUpstream) -> None:
    gw = timeouts_gateway
    body = {"model": "stalls-mid-stream", "messages": HELLO, "stream": True}
    with raw_client(gw) as client:
        answer = client.post("/v1/chat/completions", json=body)

    assert answer.status_code == 200  # the first event went out before the upstream went silent
    events = [event for event in answer.text.split("\n\n") if event]
    assert len(events) == 2
    assert orjson.loads(events[0].removeprefix("data: "))["choices"][0]["delta"]["role"] == "assistant"
    error = orjson.loads(events[1].removeprefix("data: "))["error"]
    assert error["code"] == "upstream_timeout" and "went silent mid-stream" in error["message"]
