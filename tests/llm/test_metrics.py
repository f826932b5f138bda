"""The proxy's metrics, read from GET /metrics (Prometheus text) before and after real calls."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.llm.conftest import Gateway, raw_client

HELLO = [{"role": "user", "content": "Hello gateway"}]


def _samples(gw: Gateway) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = httpx.get(gw.base_url + "/metrics").text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= ls)


def test_calls_retries_and_fallbacks_are_counted(gw: Gateway) -> None:
    before = _samples(gw)
    with raw_client(gw) as client:
        assert client.post("/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": HELLO}).status_code == 200
        stream = {"model": "gpt-4o-mini", "messages": HELLO, "stream": True, "stream_options": {"include_usage": True}}
        assert client.post("/v1/chat/completions", json=stream).status_code == 200
        assert (
            client.post("/v1/chat/completions", json={"model": "with-fallback", "messages": HELLO}).status_code == 200
        )
    after = _samples(gw)

    def delta(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    call = {"gen_ai_operation_name": "chat", "gen_ai_provider_name": "openai", "gen_ai_request_model": "fake-model"}
    route = {"gateway_llm_route": "gpt-4o-mini", **call}
    assert delta("gen_ai_client_inference_duration_seconds_count", **route, error_type="") == 2
    assert delta("gen_ai_client_inference_time_to_first_chunk_seconds_count", **route) == 1
    assert delta("gen_ai_client_inference_usage_input_tokens_total", **route, gen_ai_token_modality="text") == 4
    assert delta("gen_ai_client_inference_usage_output_tokens_total", **route, gen_ai_token_modality="text") == 6
    assert delta("gen_ai_client_inference_operation_output_tokens_count", **route) == 2
    assert delta("gateway_llm_requests_total", gateway_llm_route="gpt-4o-mini", status="200") == 2

    assert delta("gateway_llm_retries_total", gateway_llm_route="with-fallback") == 1
    assert delta("gateway_llm_fallbacks_total", gateway_llm_route="with-fallback") == 1
    assert delta("gateway_llm_upstream_errors_total", gateway_llm_route="with-fallback", error_type="500") == 2
    failed = {"gateway_llm_route": "with-fallback", "gen_ai_request_model": "fake-model@status=500"}
    assert delta("gen_ai_client_inference_duration_seconds_count", **failed, error_type="500") == 2
    assert delta("gen_ai_client_inference_usage_input_tokens_total", **failed, gen_ai_token_modality="unknown") == 0
    assert ("gen_ai_client_inference_usage_input_tokens_total", frozenset({**failed, "gen_ai_operation_name": "chat",
            "gen_ai_provider_name": "openai", "gen_ai_token_modality": "unknown"}.items())) in after  # fmt: skip


def test_duration_buckets_follow_the_conventions(gw: Gateway) -> None:
    with raw_client(gw) as client:
        assert client.post("/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": HELLO}).status_code == 200
    text = httpx.get(gw.base_url + "/metrics").text
    (family,) = [
        f for f in text_string_to_metric_families(text) if f.name == "gen_ai_client_inference_duration_seconds"
    ]
    bounds = sorted({float(s.labels["le"]) for s in family.samples if s.name.endswith("_bucket")})
    assert bounds[:-1] == [0.01 * 2**i for i in range(14)] and bounds[-1] == float("inf")
