"""Prompt-linked chat calls through the proxy, with a small renderer written here (a plain function)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from starlette.applications import Starlette

from gateway.api.routes import LLM
from gateway.api.routing import table_routes
from gateway.app import EXCEPTION_HANDLERS
from gateway.errors import InvalidParameter, NotFound
from gateway.llm.prompt_link import LinkedPrompt, PromptRenderer
from gateway.llm.proxy import LlmProxy
from gateway.llm.routes_config import AuthSettings, parse_llm_settings
from tests.llm.conftest import PROVIDER_KEY, PROVIDER_KEY_ENV, FakeUpstream, target, wait_until
from tests.llm.sdk import SDK, SDK_KINDS
from tests.servers import run_app_in_thread

QA_REF = "prompts:/qa@production"


def render(ref: str, variables: Mapping[str, Any]) -> LinkedPrompt:
    if ref != QA_REF:
        raise NotFound(f"Prompt {ref!r} not found.")
    if "question" not in variables:
        raise InvalidParameter("Missing variable 'question' for prompt 'qa' version 3.")
    return LinkedPrompt(
        name="qa",
        version=3,
        messages=[
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": f"Q: {variables['question']}"},
        ],
        model_config={"model": "gpt-4o-mini", "temperature": 0.1, "max_tokens": 64},
        response_format={"type": "json_object"},
    )


@contextlib.contextmanager
def proxy_app(upstream: FakeUpstream, renderer: PromptRenderer | None) -> Iterator[tuple[str, InMemorySpanExporter]]:
    """The proxy's routes alone in a Starlette app (as create_app mounts them: with the app's error
    handlers, which answer what the proxy raises), with this renderer."""
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    settings = parse_llm_settings({"routes": [{"name": "gpt-4o-mini", "targets": [target(upstream)]}]}, environ={})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        proxy = LlmProxy(settings, AuthSettings(), provider, renderer, environ={PROVIDER_KEY_ENV: PROVIDER_KEY})
        await proxy.start()
        app.state.llm_proxy = proxy
        yield
        await proxy.close()

    app = Starlette(routes=table_routes(LLM), lifespan=lifespan, exception_handlers=dict(EXCEPTION_HANDLERS))
    with run_app_in_thread(app) as base_url:
        yield base_url, exporter


@pytest.fixture(scope="module")
def linked(fake_upstream: FakeUpstream) -> Iterator[tuple[str, InMemorySpanExporter]]:
    with proxy_app(fake_upstream, render) as app:
        yield app


def test_rendered_messages_go_first_and_fill_what_the_request_leaves_unset(
    linked: tuple[str, InMemorySpanExporter], upstream: FakeUpstream
) -> None:
    base_url, exporter = linked
    exporter.clear()
    body = {
        "prompt": {"ref": QA_REF, "variables": {"question": "Why is the sky blue?"}},
        "messages": [{"role": "user", "content": "Keep it short."}],
        "max_tokens": 10,  # the request's own value wins over the prompt's 64
        "x_extra": True,
    }
    answer = httpx.post(base_url + "/v1/chat/completions", json=body)
    assert answer.status_code == 200, answer.text

    sent = upstream.recorder.requests[0].json()
    assert sent == {
        "messages": [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "Q: Why is the sky blue?"},
            {"role": "user", "content": "Keep it short."},
        ],
        "max_tokens": 10,
        "x_extra": True,
        "model": "fake-model",
        "temperature": 0.1,
        "response_format": {"type": "json_object"},
    }
    spans = wait_until(lambda: len(exporter.get_finished_spans()) == 2 and exporter.get_finished_spans(), what="spans")
    for span in spans:
        assert (span.attributes["gen_ai.prompt.name"], span.attributes["gen_ai.prompt.version"]) == ("qa", 3)
    (server,) = [s for s in spans if s.kind is SpanKind.SERVER]
    assert server.attributes["gateway.llm.route"] == "gpt-4o-mini"


@pytest.mark.parametrize("kind", SDK_KINDS)
def test_prompt_link_through_the_sdk(
    linked: tuple[str, InMemorySpanExporter], upstream: FakeUpstream, kind: str
) -> None:
    answer = SDK(kind, linked[0] + "/v1").chat(
        model="gpt-4o-mini", messages=[], extra_body={"prompt": {"ref": QA_REF, "variables": {"question": "2+2?"}}}
    )
    assert answer.choices[0].message.content == "Echo: Q: 2+2?"


@pytest.mark.parametrize(
    ("prompt", "status", "fragment"),
    [
        ({"ref": "prompts:/nope@production", "variables": {}}, 404, "'prompts:/nope@production' not found"),
        ({"ref": QA_REF, "variables": {}}, 400, "Missing variable 'question'"),
        ({"ref": QA_REF, "variables": ["question"]}, 400, "'prompt.variables' must be an object"),
        ({"variables": {}}, 400, "'prompt.ref' must be a prompt reference"),
        ("qa", 400, "'prompt' must be an object"),
    ],
)
def test_prompt_errors(
    linked: tuple[str, InMemorySpanExporter], upstream: FakeUpstream, prompt: Any, status: int, fragment: str
) -> None:
    answer = httpx.post(linked[0] + "/v1/chat/completions", json={"prompt": prompt, "messages": []})
    assert answer.status_code == status
    assert fragment in answer.json()["error"]["message"]
    assert upstream.recorder.requests == []


def test_without_a_renderer_a_prompt_is_400(upstream: FakeUpstream) -> None:
    with proxy_app(upstream, None) as (base_url, _):
        answer = httpx.post(base_url + "/v1/chat/completions", json={"prompt": {"ref": QA_REF}, "messages": []})
    assert answer.status_code == 400
    assert "prompt registry not available" in answer.json()["error"]["message"]
