"""Retries, Retry-After, fallback before the first byte only, and timeouts: the Responses API and Anthropic's
Messages API get what chat completions get, each with its own error shape. Raw HTTP (httpx), so the bytes the
gateway answers are what is checked."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from opentelemetry.trace import SpanKind

from tests.llm.conftest import FakeUpstream, Gateway, closed_port_url, running_gateway, target

FAST = {"backoff_initial_s": 0.01, "backoff_max_s": 0.05}


@dataclass(frozen=True)
class Api:
    name: str
    path: str
    provider: str
    model: str  # the fake upstream's model name

    def body(self, route: str, **extra: Any) -> dict[str, Any]:
        if self.name == "responses":
            return {"model": route, "input": "Hello gateway", **extra}
        return {"model": route, "max_tokens": 32, "messages": [{"role": "user", "content": "Hello gateway"}], **extra}

    def error(self, answer: httpx.Response) -> tuple[str, str]:
        """(type or code, message) of an error answered in this API's shape."""
        body = answer.json()
        if self.name == "responses":
            return body["error"]["code"], body["error"]["message"]
        assert body["type"] == "error"
        return body["error"]["type"], body["error"]["message"]

    def stream_error(self, event: str) -> tuple[str, str]:
        name, _, data = event.partition("\n")
        assert name == "event: error"
        body = orjson.loads(data.removeprefix("data: "))
        if self.name == "responses":
            assert body["type"] == "error" and isinstance(body["sequence_number"], int)
            return body["code"], body["message"]
        return body["error"]["type"], body["error"]["message"]


RESPONSES = Api("responses", "/v1/responses", "openai", "fake-model")
MESSAGES = Api("messages", "/v1/messages", "anthropic", "claude-fake")
APIS = [RESPONSES, MESSAGES]


def _routes(upstream: FakeUpstream, api: Api) -> list[dict[str, Any]]:
    def route(name: str, *models: str, **extra: Any) -> dict[str, Any]:
        targets = [target(upstream, m) if not m.startswith("http") else target(m, api.model) for m in models]
        return {"name": f"{api.name}-{name}", "provider": api.provider, "targets": targets, **extra}

    m = api.model
    return [
        route("rate-limited", f"{m}@fail_first=1,status=429,retry_after=1", retries=2, **FAST),
        route("always-429", f"{m}@status=429,retry_after=3", retries=0),
        route("fallback", f"{m}@status=500", m, retries=1, **FAST),
        route("dead-first", closed_port_url(), m, retries=0, connect_timeout_s=1),
        route("slow", f"{m}@delay=3", timeout_s=0.5),
        route("stalls", f"{m}@chunk_delay=2", read_timeout_s=0.3, timeout_s=10, retries=0),
        route("breaks", f"{m}@break_after=2", m, retries=0),
    ]


@pytest.fixture(scope="module")
def resilient(fake_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    llm = {"routes": _routes(fake_upstream, RESPONSES) + _routes(fake_upstream, MESSAGES)}
    with running_gateway(Path(tmp_path_factory.mktemp("resilience")), llm) as gw:
        yield gw


@pytest.fixture
def gw(resilient: Gateway) -> Gateway:
    resilient.exporter.clear()
    return resilient


def _post(gw: Gateway, api: Api, route: str, **extra: Any) -> httpx.Response:
    return httpx.post(gw.base_url + api.path, json=api.body(f"{api.name}-{route}", **extra), timeout=30)


@pytest.mark.parametrize("api", APIS, ids=lambda a: a.name)
def test_a_429_is_retried_after_its_retry_after(gw: Gateway, upstream: FakeUpstream, api: Api) -> None:
    answer = _post(gw, api, "rate-limited")
    assert answer.status_code == 200, answer.text
    first, second = upstream.recorder.requests
    assert second.at - first.at >= 1.0  # the upstream's Retry-After, not the 10-50 ms backoff
    spans = gw.wait_spans(lambda s: sum(x.kind is SpanKind.CLIENT for x in s) == 2 and len(s) == 3)
    (server,) = [s for s in spans if s.kind is SpanKind.SERVER]
    assert server.attributes["gateway.llm.attempts"] == 2 and server.attributes["gen_ai.provider.name"] == api.provider


@pytest.mark.parametrize("api", APIS, ids=lambda a: a.name)
def test_a_final_429_is_a_502_with_its_retry_after(gw: Gateway, upstream: FakeUpstream, api: Api) -> None:
    answer = _post(gw, api, "always-429")
    assert answer.status_code == 502 and answer.headers["retry-after"] == "3"
    kind, message = api.error(answer)
    assert kind == ("upstream_429" if api is RESPONSES else "api_error") and "answered HTTP 429" in message


@pytest.mark.parametrize("api", APIS, ids=lambda a: a.name)
@pytest.mark.parametrize("route", ["fallback", "dead-first"])
def test_the_next_target_answers_before_the_first_byte(
    gw: Gateway, upstream: FakeUpstream, api: Api, route: str
) -> None:
    answer = _post(gw, api, route, stream=True)
    assert answer.status_code == 200
    assert [e for e in answer.text.split("\n\n") if e][-1].split("\n")[0] in (
        "event: response.completed",
        "event: message_stop",
    )
    spans = gw.wait_spans(lambda s: any(x.kind is SpanKind.SERVER for x in s))
    clients = sorted((s for s in spans if s.kind is SpanKind.CLIENT), key=lambda s: s.start_time or 0)
    assert clients[-1].attributes["gateway.llm.fallback"] is True and "error.type" not in clients[-1].attributes
    assert all("error.type" in c.attributes for c in clients[:-1])


@pytest.mark.parametrize("api", APIS, ids=lambda a: a.name)
def test_no_fallback_after_the_first_byte(gw: Gateway, upstream: FakeUpstream, api: Api) -> None:
    answer = _post(gw, api, "breaks", stream=True)
    assert answer.status_code == 200  # the status line went out with the first events
    events = [e for e in answer.text.split("\n\n") if e]
    assert len(events) == 3
    kind, message = api.stream_error(events[-1])
    assert kind == ("upstream_stream_interrupted" if api is RESPONSES else "api_error") and "mid-stream" in message
    assert len(upstream.recorder.requests) == 1  # the healthy second target was never asked


@pytest.mark.parametrize("api", APIS, ids=lambda a: a.name)
def test_the_routes_timeout_is_a_504(gw: Gateway, upstream: FakeUpstream, api: Api) -> None:
    answer = _post(gw, api, "slow")
    assert answer.status_code == 504
    kind, message = api.error(answer)
    assert kind == ("upstream_timeout" if api is RESPONSES else "api_error") and "timeout_s=0.5" in message


@pytest.mark.parametrize("api", APIS, ids=lambda a: a.name)
def test_a_stream_gone_silent_ends_with_one_timeout_event(gw: Gateway, upstream: FakeUpstream, api: Api) -> None:
    answer = _post(gw, api, "stalls", stream=True)
    assert answer.status_code == 200
    events = [e for e in answer.text.split("\n\n") if e]
    assert len(events) == 2
    kind, message = api.stream_error(events[-1])
    assert kind == ("upstream_timeout" if api is RESPONSES else "api_error") and "went silent" in message
    spans = gw.wait_spans(lambda s: any(x.kind is SpanKind.SERVER for x in s))
    (server,) = [s for s in spans if s.kind is SpanKind.SERVER]
    assert "Timeout" in str(server.attributes["error.type"])
