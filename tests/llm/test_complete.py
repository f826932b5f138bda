"""``LlmProxy.complete``: an in-process chat completion through a real gateway's routes and telemetry.

The gateway runs under uvicorn (``running_gateway``) with the fake upstream behind its routes. Its own
proxy's aiohttp sessions belong to the server thread's event loop, so each test drives a second
``LlmProxy`` built from the same routes, prompt renderer and TracerProvider on its own loop: the spans
reach the same in-memory exporter and the same trace-summary sink, store and ``GET /api/traces``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from gateway.llm.completion import Completion
from gateway.llm.errors import InvalidRequestError, ProxyError, UpstreamError, UpstreamTimeoutError
from gateway.llm.proxy import LlmProxy
from gateway.llm.routes_config import AuthSettings
from gateway.telemetry import semconv as sc
from tests.llm.conftest import FakeUpstream, Gateway, running_gateway, target, wait_until

FAST = {"backoff_initial_s": 0.01, "backoff_max_s": 0.05}
PRICES: dict[str, Any] = {"input_price_per_mtok": 1.5, "output_price_per_mtok": 6}


@pytest.fixture(scope="module")
def gateway(
    fake_upstream: FakeUpstream, not_json_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    up = fake_upstream
    llm = {
        "routes": [
            {"name": "judge", "targets": [target(up, **PRICES)]},
            {"name": "unpriced", "targets": [target(up)]},
            {"name": "flaky", "retries": 1, **FAST, "targets": [target(up, "fake-model@fail_first=1,status=500")]},
            {
                "name": "rate-limited",
                "retries": 1,
                **FAST,
                "targets": [target(up, "fake-model@fail_first=1,status=429,retry_after=2")],
            },
            {"name": "always-429", "retries": 0, "targets": [target(up, "fake-model@status=429,retry_after=3")]},
            {"name": "refuses", "targets": [target(up, "fake-model@status=400")]},
            {"name": "hanging", "targets": [target(up, "fake-model@delay=60")]},
            {"name": "text-answer", "targets": [target(not_json_url, "text")]},
            {"name": "list-answer", "targets": [target(not_json_url, "list")]},
            {"name": "claude", "provider": "anthropic", "targets": [target(up, "claude-fake")]},
        ]
    }
    with running_gateway(tmp_path_factory.mktemp("complete"), llm) as gw:
        yield gw


@pytest.fixture
def gw(gateway: Gateway, upstream: FakeUpstream) -> Gateway:
    """The module's gateway, its spans and the fake upstream's records cleared for this test."""
    gateway.exporter.clear()
    return gateway


def complete(gw: Gateway, body: dict[str, Any], **options: Any) -> Completion:
    """``LlmProxy.complete`` on a proxy with the gateway's routes and telemetry; bounded by 60 s."""
    app_proxy: LlmProxy = gw.app.state.llm_proxy

    async def main() -> Completion:
        proxy = LlmProxy(app_proxy.settings, AuthSettings(), gw.app.state.tracer_provider, app_proxy.renderer)
        await proxy.start()
        try:
            return await asyncio.wait_for(proxy.complete(body, **options), 60)
        finally:
            await proxy.close()

    return asyncio.run(main())


def chat(route: str, text: str = "hello judge") -> dict[str, Any]:
    return {"model": route, "temperature": 0, "messages": [{"role": "user", "content": text}]}


def top_span(gw: Gateway, trace_id: str) -> ReadableSpan:
    def find() -> ReadableSpan | None:
        for span in gw.spans():
            if span.parent is None and span.context and format(span.context.trace_id, "032x") == trace_id:
                return span
        return None

    span: ReadableSpan = wait_until(find, what=f"the top span of trace {trace_id}")
    return span


def client_call(gw: Gateway, route: str) -> ReadableSpan:
    """A client's call through HTTP; its SERVER span."""
    answer = httpx.post(gw.v1 + "/chat/completions", json=chat(route, "what is two plus two"), timeout=30)
    assert answer.status_code == 200, answer.text
    spans = gw.wait_spans(lambda spans: any(s.kind is SpanKind.SERVER for s in spans))
    return next(s for s in spans if s.kind is SpanKind.SERVER)


def test_a_judge_call_is_its_own_trace_linked_to_the_judged_span_and_stored(gw: Gateway) -> None:
    judged = client_call(gw, "unpriced")
    assert judged.context is not None
    judged_ids = (format(judged.context.trace_id, "032x"), format(judged.context.span_id, "016x"))
    gw.exporter.clear()
    attributes = {
        sc.GATEWAY_JUDGE_NAME: "correctness",
        sc.GATEWAY_JUDGE_PROMPT_NAME: "judges.correctness",
        sc.GATEWAY_JUDGE_PROMPT_VERSION: 3,
        sc.GATEWAY_JUDGE_TARGET_TRACE_ID: judged_ids[0],
        sc.GATEWAY_JUDGE_TARGET_SPAN_ID: judged_ids[1],
    }

    result = complete(gw, chat("judge", "is this correct"), attributes=attributes, links=[judged_ids])

    # the answer: the fake echoes the last user message; usage is word counts; priced at 1.5 and 6 USD/Mtok
    assert result.text == "Echo: is this correct"
    assert result.data["choices"][0]["message"]["content"] == result.text
    assert (result.input_tokens, result.output_tokens, result.attempts) == (3, 4, 1)
    assert result.cost_usd == pytest.approx((3 * 1.5 + 4 * 6) / 1_000_000)
    assert result.response_model == "fake-model" and result.target.endswith(" fake-model")
    assert result.trace_id != judged_ids[0] and len(result.trace_id) == 32 and len(result.span_id) == 16
    assert result.latency_s > 0

    # its spans: a new trace whose INTERNAL top span links to the judged span and carries the judge's attributes
    top = top_span(gw, result.trace_id)
    assert top.kind is SpanKind.INTERNAL and top.context is not None
    assert format(top.context.span_id, "016x") == result.span_id
    assert [(format(link.context.trace_id, "032x"), format(link.context.span_id, "016x")) for link in top.links] == [
        judged_ids
    ]
    top_attributes = dict(top.attributes or {})
    assert {name: top_attributes.get(name) for name in attributes} == attributes
    assert top_attributes[sc.GATEWAY_LLM_ROUTE] == "judge"
    assert top_attributes[sc.GATEWAY_USAGE_COST_USD] == pytest.approx(result.cost_usd)
    clients = [
        s for s in gw.spans() if s.kind is SpanKind.CLIENT and s.parent and s.parent.span_id == top.context.span_id
    ]
    assert len(clients) == 1 and clients[0].attributes
    assert clients[0].attributes[sc.GATEWAY_USAGE_COST_USD] == pytest.approx(result.cost_usd)

    # its trace-summary row, through the gateway's API: the judge's attributes in the row's attributes JSON
    def stored() -> dict[str, Any] | None:
        answer = httpx.get(f"{gw.base_url}/api/traces/{result.trace_id}", timeout=10)
        return answer.json() if answer.status_code == 200 else None

    (row,) = wait_until(stored, what="the judge call's trace summary")["summaries"]
    assert (row["span_id"], row["route"], row["status_code"]) == (result.span_id, "judge", 200)
    assert (row["input_tokens"], row["output_tokens"], row["error_type"]) == (3, 4, None)
    extra = row["attributes"]
    assert extra[sc.GATEWAY_JUDGE_NAME] == "correctness" and extra[sc.GATEWAY_JUDGE_PROMPT_VERSION] == 3
    assert extra[sc.GATEWAY_JUDGE_TARGET_TRACE_ID] == judged_ids[0]
    assert extra[sc.GATEWAY_USAGE_COST_USD] == pytest.approx(result.cost_usd)


def test_a_client_call_to_a_priced_route_has_its_cost_and_an_unpriced_one_none(gw: Gateway) -> None:
    server = client_call(gw, "judge")
    assert server.attributes is not None
    # "what is two plus two": 5 input tokens; "Echo: what is two plus two": 6 output tokens
    assert server.attributes[sc.GATEWAY_USAGE_COST_USD] == pytest.approx((5 * 1.5 + 6 * 6) / 1_000_000)
    gw.exporter.clear()
    server = client_call(gw, "unpriced")
    assert server.attributes is not None and sc.GATEWAY_USAGE_COST_USD not in server.attributes
    assert complete(gw, chat("unpriced")).cost_usd is None


def test_a_500_then_a_success_is_one_completion_after_two_attempts(gw: Gateway, upstream: FakeUpstream) -> None:
    result = complete(gw, chat("flaky"))
    assert result.attempts == 2 and result.text == "Echo: hello judge"
    assert len(upstream.recorder.requests) == 2
    top = top_span(gw, result.trace_id)
    assert top.attributes is not None and top.attributes[sc.GATEWAY_LLM_ATTEMPTS] == 2


def test_a_429_with_retry_after_2_is_not_retried_before_2_s(gw: Gateway, upstream: FakeUpstream) -> None:
    result = complete(gw, chat("rate-limited"))
    assert result.attempts == 2
    first, second = upstream.recorder.requests
    assert second.at - first.at >= 2.0  # the upstream's Retry-After, not the 0.01 s backoff


def test_a_final_429_is_a_502_with_its_retry_after(gw: Gateway) -> None:
    with pytest.raises(UpstreamError) as caught:
        complete(gw, chat("always-429"))
    error = caught.value
    assert (error.status, error.error_type, error.retry_after_s) == (502, "429", 3.0)
    assert "answered HTTP 429" in error.message


def test_timeout_s_bounds_a_hanging_call(gw: Gateway) -> None:
    with pytest.raises(UpstreamTimeoutError) as caught:
        complete(gw, chat("hanging"), timeout_s=1)
    assert caught.value.status == 504 and "timeout_s=1 s" in caught.value.message


def test_an_unknown_route_is_a_404_model_not_found(gw: Gateway) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        complete(gw, chat("no-such-route"))
    assert (caught.value.status, caught.value.openai_code) == (404, "model_not_found")
    assert "'no-such-route'" in caught.value.message and "judge" in caught.value.message


def test_an_upstream_4xx_keeps_its_status_and_message(gw: Gateway) -> None:
    with pytest.raises(ProxyError) as caught:
        complete(gw, chat("refuses"))
    assert caught.value.status == 400 and "fake upstream error 400" in caught.value.message


@pytest.mark.parametrize("route", ["text-answer", "list-answer"])
def test_a_2xx_that_is_not_a_json_object_is_a_502_naming_the_target(gw: Gateway, not_json_url: str, route: str) -> None:
    with pytest.raises(UpstreamError) as caught:
        complete(gw, chat(route))
    assert caught.value.status == 502 and caught.value.error_type == "invalid_response"
    assert f"{not_json_url} {'text' if route == 'text-answer' else 'list'}" in caught.value.message
    assert "not a JSON object" in caught.value.message


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"links": [("xyz", "0" * 16)]}, "links[0]: trace id 'xyz' is not 32 hex digits"),
        ({"timeout_s": 0}, "timeout_s must be a number of seconds > 0"),
    ],
)
def test_bad_arguments_are_invalid_requests(gw: Gateway, options: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InvalidRequestError, match=fragment.replace("[", r"\[")):
        complete(gw, chat("judge"), **options)
    with pytest.raises(InvalidRequestError, match="'stream' must be false"):
        complete(gw, {**chat("judge"), "stream": True})


def test_a_call_made_inside_another_span_still_starts_its_own_trace(gw: Gateway) -> None:
    tracer = gw.app.state.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("caller") as caller:
        result = complete(gw, chat("unpriced"))  # asyncio.run copies this context into its task
    assert result.trace_id != format(caller.get_span_context().trace_id, "032x")
    assert top_span(gw, result.trace_id).parent is None


def test_a_cancelled_call_ends_its_spans(gw: Gateway, upstream: FakeUpstream) -> None:
    app_proxy: LlmProxy = gw.app.state.llm_proxy

    async def main() -> None:
        proxy = LlmProxy(app_proxy.settings, AuthSettings(), gw.app.state.tracer_provider)
        await proxy.start()
        try:
            task = asyncio.create_task(proxy.complete(chat("hanging")))
            deadline = asyncio.get_running_loop().time() + 10
            while not upstream.recorder.requests and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        finally:
            await proxy.close()

    asyncio.run(main())
    spans = gw.wait_spans(lambda spans: len(spans) == 2)
    assert sorted((s.kind.name, (s.attributes or {}).get(sc.ERROR_TYPE)) for s in spans) == [
        ("CLIENT", "cancelled"),
        ("INTERNAL", "cancelled"),
    ]


def test_a_route_of_anthropics_api_is_refused(gw: Gateway, upstream: FakeUpstream) -> None:
    """complete() sends chat completions: a route of provider anthropic cannot take one."""
    with pytest.raises(InvalidRequestError) as caught:
        complete(gw, chat("claude"))
    assert caught.value.status == 400 and "POST /v1/messages" in caught.value.message
    assert upstream.recorder.requests == []
