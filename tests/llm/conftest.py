"""LLM proxy fixtures: the fake upstream and real gateways (create_app under uvicorn on loopback).

Spans are read from an ``InMemorySpanExporter`` added to the app's own TracerProvider (public SDK API);
the upstream's view comes from the fake upstream's ``Recorder``.
"""

from __future__ import annotations

import hashlib
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.app import create_app
from gateway.config import load_settings
from loadtest.fake_upstream import Recorder
from loadtest.fake_upstream import create_app as create_fake_app
from tests.servers import run_app_in_thread

PROVIDER_KEY_ENV = "LLM_TEST_PROVIDER_KEY"
PROVIDER_KEY = "sk-provider-" + secrets.token_hex(12)
CLIENT_KEY = "gw-client-" + secrets.token_hex(12)
CLIENT_KEY_DIGEST = hashlib.sha256(CLIENT_KEY.encode()).hexdigest()


@dataclass
class FakeUpstream:
    base_url: str  # with /v1
    recorder: Recorder

    def wait_for(self, condition: Callable[[], Any], *, timeout_s: float = 10.0, what: str = "condition") -> Any:
        return wait_until(condition, timeout_s=timeout_s, what=what)


@dataclass
class Gateway:
    base_url: str
    app: Starlette
    exporter: InMemorySpanExporter

    @property
    def v1(self) -> str:
        return self.base_url + "/v1"

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def wait_spans(
        self, condition: Callable[[list[ReadableSpan]], bool], *, timeout_s: float = 10.0
    ) -> list[ReadableSpan]:
        return wait_until(lambda: (s := self.spans()) and condition(s) and s, timeout_s=timeout_s, what="spans")


def wait_until(condition: Callable[[], Any], *, timeout_s: float = 10.0, what: str = "condition") -> Any:
    """Poll ``condition`` until it is truthy (bounded); its value is returned."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout_s} s")
        time.sleep(0.01)


def closed_port_url() -> str:
    """A loopback URL nothing listens on (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


@pytest.fixture(scope="session")
def fake_upstream() -> Iterator[FakeUpstream]:
    recorder = Recorder()
    with run_app_in_thread(create_fake_app(recorder)) as base_url:
        yield FakeUpstream(base_url + "/v1", recorder)


@pytest.fixture
def upstream(fake_upstream: FakeUpstream) -> FakeUpstream:
    """The session's fake upstream, with its records and per-model call counts reset for this test."""
    fake_upstream.recorder.reset()
    return fake_upstream


@contextmanager
def running_gateway(
    tmp_path: Path,
    llm: dict[str, Any],
    auth: dict[str, Any] | None = None,
    *,
    provider_key: str = PROVIDER_KEY,
    **more: Any,
) -> Iterator[Gateway]:
    """A real gateway (create_app) with these llm and auth sections (and ``more`` settings, e.g. ``redis_url``),
    its spans kept in memory."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv(PROVIDER_KEY_ENV, provider_key)  # read once, when the proxy starts
        env.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
        env.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
        settings = load_settings(
            {"store_uri": f"sqlite:///{tmp_path}/store.db", "workers": 1, "llm": llm, "auth": auth or {}, **more},
            environ={},
        )
        app = create_app(settings)
        with run_app_in_thread(app) as base_url:
            provider: TracerProvider = app.state.tracer_provider
            exporter = InMemorySpanExporter()
            provider.add_span_processor(SimpleSpanProcessor(exporter))
            yield Gateway(base_url, app, exporter)


def target(upstream: FakeUpstream | str, model: str = "fake-model", **extra: Any) -> dict[str, Any]:
    base_url = upstream if isinstance(upstream, str) else upstream.base_url
    return {"base_url": base_url, "model": model, "api_key_env": PROVIDER_KEY_ENV, **extra}


def standard_routes(upstream: FakeUpstream) -> dict[str, Any]:
    """The routes most tests share (one gateway per module); each names the behaviour it exercises."""
    fast = {"backoff_initial_s": 0.01, "backoff_max_s": 0.05}
    return {
        "routes": [
            {"name": "gpt-4o-mini", "targets": [target(upstream)]},
            {"name": "fake-model", "targets": [target(upstream)]},  # same name upstream: raw bytes forwarded
            {"name": "text-embedding-3-small", "targets": [target(upstream, "fake-embedding")]},
            {
                "name": "with-fallback",
                "retries": 1,
                **fast,
                "targets": [target(upstream, "fake-model@status=500"), target(upstream, "fake-model")],
            },
            {
                "name": "dead-first",
                "retries": 1,
                **fast,
                "connect_timeout_s": 1,
                "targets": [target(closed_port_url()), target(upstream)],
            },
            {
                "name": "rate-limited",
                "retries": 2,
                **fast,
                "targets": [target(upstream, "fake-model@fail_first=1,status=429,retry_after=1")],
            },
            {
                "name": "always-500",
                "retries": 1,
                **fast,
                "targets": [target(upstream, "fake-model@status=500"), target(upstream, "fake-model@status=503")],
            },
            {"name": "slow", "timeout_s": 0.5, "targets": [target(upstream, "fake-model@delay=3")]},
            {"name": "bad-key", "targets": [target(upstream, "fake-model@status=401")]},
        ]
    }


@pytest.fixture(scope="module")
def gateway(fake_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with running_gateway(tmp_path_factory.mktemp("llm-gateway"), standard_routes(fake_upstream)) as gw:
        yield gw


@pytest.fixture
def gw(gateway: Gateway) -> Gateway:
    """The module's gateway with its recorded spans cleared for this test."""
    gateway.exporter.clear()
    return gateway


def raw_client(gw: Gateway, **headers: str) -> httpx.Client:
    return httpx.Client(base_url=gw.base_url, timeout=30, headers=headers)


def _unusable_answers_upstream() -> Starlette:
    """An upstream whose 200 answers a client cannot use: text for model "text", a JSON list for "list", and
    a whole JSON chat completion, even to a stream request, for "json"."""

    async def chat(request: Request) -> Response:
        body = orjson.loads(await request.body())
        model = body.get("model")
        if model == "list":
            return Response(b"[1, 2]", media_type="application/json")
        if model == "json":
            message = {"role": "assistant", "content": "whole"}
            choice = {"index": 0, "message": message, "finish_reason": "stop"}
            answer = {"id": "c-1", "object": "chat.completion", "model": "json", "choices": [choice]}
            return Response(orjson.dumps(answer), media_type="application/json")
        return Response(b"<html>gateway of some proxy</html>", media_type="text/html")

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


@pytest.fixture(scope="module")
def not_json_url() -> Iterator[str]:
    """The base URL (with /v1) of an upstream whose 200 answers are not usable (``_unusable_answers_upstream``)."""
    with run_app_in_thread(_unusable_answers_upstream()) as base_url:
        yield base_url + "/v1"
