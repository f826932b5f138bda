"""A prompt-linked chat completion through a real gateway to a real (tiny) OpenAI-compatible upstream:
the upstream receives the rendered messages and the prompt's config, and the exported SERVER span and
the stored trace summary carry gen_ai.prompt.name and gen_ai.prompt.version."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.otlp_receiver import SERVER, otlp_receiver
from tests.servers import free_port
from tests.telemetry.conftest import gateway_settings, run_app, wait_until

CHAT = [
    {"role": "system", "content": "You answer in {{ lang }}."},
    {"role": "user", "content": "Question: {{ question }}"},
]


@contextmanager
def recording_upstream() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """An OpenAI-compatible chat upstream on loopback that keeps every request body it receives."""
    received: list[dict[str, Any]] = []

    async def chat(request: Request) -> Response:
        body = orjson.loads(await request.body())
        received.append(body)
        answer = {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Oui."}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 2, "total_tokens": 22},
        }
        return Response(orjson.dumps(answer), media_type="application/json")

    port = free_port()
    app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, what="upstream start")
        yield f"http://127.0.0.1:{port}/v1", received
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_prompt_linked_chat_completion(store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("OTEL_")]:
        monkeypatch.delenv(name)
    with otlp_receiver() as receiver, recording_upstream() as (base_url, received):
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
        settings = gateway_settings(
            store_url,
            llm={"routes": [{"name": "gpt-4o-mini", "targets": [{"base_url": base_url, "model": "llama-3.1-8b"}]}]},
            **{"telemetry.summary_flush_interval_s": 0.05},
        )
        with run_app(settings) as gw:
            api = gw.client
            api.post("/api/prompts/qa/versions", json={"template": "old {{ question }}"})
            config = {"model_name": "gpt-4o-mini", "temperature": 0.7, "max_tokens": 64, "top_k": 5, "provider": "x"}
            assert (
                api.post("/api/prompts/qa/versions", json={"template": CHAT, "model_config": config}).status_code == 201
            )
            api.put("/api/prompts/qa/aliases/production", json={"version": 2})

            body = {
                "prompt": {"ref": "prompts:/qa@production", "variables": {"lang": "French", "question": "ça va?"}},
                "messages": [{"role": "user", "content": "Be brief."}],
                "temperature": 0.1,  # the request's own value wins over the prompt's
            }
            answer = api.post("/v1/chat/completions", json=body)
            assert answer.status_code == 200, answer.text
            assert answer.json()["choices"][0]["message"]["content"] == "Oui."

            (sent,) = received
            assert sent["messages"] == [
                {"role": "system", "content": "You answer in French."},
                {"role": "user", "content": "Question: ça va?"},
                {"role": "user", "content": "Be brief."},
            ]
            assert (sent["model"], sent["temperature"], sent["max_tokens"]) == ("llama-3.1-8b", 0.1, 64)
            assert "prompt" not in sent and "top_k" not in sent and "provider" not in sent

            spans = receiver.wait_for(lambda got: any(s.kind == SERVER for s in got))
            (server,) = [s for s in spans if s.kind == SERVER]
            assert server.attributes["gen_ai.prompt.name"] == "qa"
            assert server.attributes["gen_ai.prompt.version"] == 2
            found = wait_until(
                lambda: api.get("/api/traces", params={"prompt_name": "qa", "prompt_version": 2}).json()["traces"],
                what="the call's summary, found by prompt",
            )
            assert [(s["trace_id"], s["prompt_name"], s["prompt_version"]) for s in found] == [
                (server.trace_id, "qa", 2)
            ]
            assert api.get("/api/traces", params={"prompt_name": "qa", "prompt_version": 1}).json()["traces"] == []

            # Render errors reach the client as 4xx that name what is wrong; the upstream is never called.
            missing = api.post(
                "/v1/chat/completions", json={"prompt": {"ref": "prompts:/qa@production", "variables": {"lang": "x"}}}
            )
            assert missing.status_code == 400 and "Missing variables: 'question'" in missing.text
            unknown = api.post("/v1/chat/completions", json={"prompt": {"ref": "prompts:/qa@staging", "variables": {}}})
            assert unknown.status_code == 404 and "Prompt 'qa' has no alias 'staging'." in unknown.text
            bad_ref = api.post("/v1/chat/completions", json={"prompt": {"ref": "prompts:/qa/latest"}})
            assert bad_ref.status_code == 400 and "Not a proper prompt reference" in bad_ref.text
            assert len(received) == 1
