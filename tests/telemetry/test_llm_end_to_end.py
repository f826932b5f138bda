"""Through the LLM proxy: a chat completion via a real gateway to a real (tiny) OpenAI-compatible upstream,
whose spans reach a real OTLP receiver and whose summary reaches the trace store and /api/traces."""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import orjson
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.config import Settings
from tests.otlp_receiver import CLIENT, SERVER, otlp_receiver
from tests.servers import free_port
from tests.telemetry.conftest import gateway_settings, run_app, wait_until

PROVIDER_KEY = "sk-provider-" + secrets.token_hex(8)
CLIENT_KEY = "gw-client-" + secrets.token_hex(8)
AUTHED = {"Authorization": f"Bearer {CLIENT_KEY}"}  # /api/traces needs the key too (traces:read)


async def _chat(request: Request) -> Response:
    body = orjson.loads(await request.body())
    answer = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12},
    }
    return Response(orjson.dumps(answer), media_type="application/json")


@contextmanager
def upstream() -> Iterator[str]:
    """A minimal OpenAI-compatible chat upstream under uvicorn on loopback; yields its /v1 base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            Starlette(routes=[Route("/v1/chat/completions", _chat, methods=["POST"])]),
            host="127.0.0.1",
            port=port,
            log_level="warning",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, what="upstream start")
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _settings(store_uri: str, base_url: str) -> Settings:
    return gateway_settings(
        store_uri,
        llm={
            "routes": [
                {
                    "name": "gpt-4o-mini",
                    "targets": [{"base_url": base_url, "model": "llama-3.1-8b", "api_key_env": "TEST_PROVIDER_KEY"}],
                }
            ]
        },
        auth={"keys": [hashlib.sha256(CLIENT_KEY.encode()).hexdigest()]},
        **{"telemetry.summary_flush_interval_s": 0.05},
    )


def test_chat_completion_spans_and_summary(
    store_url: str, otel_env: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_PROVIDER_KEY", PROVIDER_KEY)
    with otlp_receiver() as receiver, upstream() as base_url:
        otel_env(OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint, OTEL_BSP_SCHEDULE_DELAY="50")
        with run_app(_settings(store_url, base_url)) as gw:
            trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
            answer = gw.client.post(
                "/v1/chat/completions",
                json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]},
                headers={"Authorization": f"Bearer {CLIENT_KEY}", "traceparent": f"00-{trace_id}-{parent_id}-01"},
            )
            assert answer.status_code == 200, answer.text
            spans = receiver.wait_for(
                lambda got: any(s.kind == SERVER for s in got) and any(s.kind == CLIENT for s in got)
            )
            (summary,) = wait_until(
                lambda: gw.client.get(f"/api/traces/{trace_id}", headers=AUTHED).json().get("summaries"),
                what="the call's summary",
            )
            found = gw.client.get(
                "/api/traces", params={"model": "llama-3.1-8b", "route": "gpt-4o-mini"}, headers=AUTHED
            ).json()
            stored_text = orjson.dumps([summary, found]).decode()

    (server,) = [s for s in spans if s.kind == SERVER]
    (client,) = [s for s in spans if s.kind == CLIENT]
    assert (server.trace_id, server.parent_span_id) == (trace_id, parent_id)  # the client's traceparent
    assert client.parent_span_id == server.span_id and client.trace_id == trace_id
    assert server.resource["service.name"] == "gateway"
    assert server.attributes["gateway.llm.route"] == "gpt-4o-mini"
    assert client.attributes["gen_ai.request.model"] == "llama-3.1-8b"

    expected_key_id = hashlib.sha256(CLIENT_KEY.encode()).hexdigest()[:12]
    assert summary["trace_id"] == trace_id and summary["span_id"] == server.span_id
    assert (summary["route"], summary["operation"], summary["status_code"]) == ("gpt-4o-mini", "chat", 200)
    assert (summary["request_model"], summary["response_model"]) == (
        server.attributes.get("gen_ai.request.model"),
        "llama-3.1-8b",
    )
    assert (summary["input_tokens"], summary["output_tokens"]) == (9, 3)
    assert summary["key_id"] == expected_key_id and summary["error_type"] is None
    assert [s["trace_id"] for s in found["traces"]] == [trace_id]

    # Neither the provider key nor the client's key reached a span or the store.
    exported_text = orjson.dumps([[s.attributes, s.resource] for s in spans]).decode()
    for secret in (PROVIDER_KEY, CLIENT_KEY):
        assert secret not in exported_text
        assert secret not in stored_text
    assert all(secret not in str(h) for h in receiver.headers for secret in (PROVIDER_KEY, CLIENT_KEY))
