"""A real gateway with every kind of route live: the iris ONNX model (default, ``models:/iris@prod``), a prompt
``qa`` with an alias, and LLM routes to the fake upstream (loadtest/fake_upstream.py: OpenAI's API, and
Anthropic's for the route of provider anthropic) and to a closed loopback port; served by uvicorn on loopback. For
the route-table and OpenAPI tests."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.app import GatewayApp, create_app
from gateway.config import load_settings
from prompts.store import PromptStore
from tests.api.batching_gateway import register
from tests.packages import PackageCache
from tests.servers import run_app_in_thread

UPSTREAM_KEY_ENV = "FULL_GATEWAY_UPSTREAM_KEY"
UPSTREAM_KEY = "sk-upstream-full-gateway"  # the LLM routes' provider key


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


@contextlib.contextmanager
def full_gateway(
    root: Path,
    packages: PackageCache,
    auth: dict[str, object] | None = None,
    *,
    more: dict[str, object] | None = None,
    llm_more: dict[str, object] | None = None,
) -> Iterator[tuple[GatewayApp, str]]:
    """The app and its base URL, once /health answers 200; ``auth`` is the ``auth`` section (none: open),
    ``more`` further settings (dotted keys) and ``llm_more`` further keys of the ``llm`` section."""
    from loadtest.fake_upstream import create_app as create_fake_upstream

    roots = [packages.root, root]
    store_uri = f"sqlite:///{root}/store.db"
    register(store_uri, "iris", packages.get("onnx_classifier"), roots)
    prompts = PromptStore.open(store_uri)
    prompts.create_version("qa", "Answer {{ question }}")
    prompts.set_alias("qa", "production", 1)
    prompts.close()
    with run_app_in_thread(create_fake_upstream()) as upstream_url, pytest.MonkeyPatch.context() as env:
        env.setenv(UPSTREAM_KEY_ENV, UPSTREAM_KEY)

        def target(base_url: str, model: str) -> dict[str, object]:
            return {"base_url": base_url, "model": model, "api_key_env": UPSTREAM_KEY_ENV}

        settings = load_settings(
            {
                "store_uri": store_uri,
                "artifact_roots": [str(r) for r in roots],
                "workers": 1,
                "serving.default_model": "models:/iris@prod",
                "serving.preload": ["models:/iris@prod"],
                "llm": {
                    "routes": [
                        {"name": "gpt-4o-mini", "targets": [target(upstream_url + "/v1", "fake-model")]},
                        {"name": "embed", "targets": [target(upstream_url + "/v1", "fake-embedding")]},
                        {"name": "claude", "provider": "anthropic", "targets": [target(upstream_url + "/v1", "c")]},
                        {"name": "dead", "connect_timeout_s": 1, "targets": [target(closed_port_url(), "m")]},
                    ],
                    **(llm_more or {}),
                },
                **({"auth": auth} if auth is not None else {}),
                **(more or {}),
            },
            environ={},
        )
        app = create_app(settings)
        assert isinstance(app, GatewayApp)
        with _serving(app) as base_url:
            yield app, base_url


@contextlib.contextmanager
def _serving(app: GatewayApp) -> Iterator[str]:
    with run_app_in_thread(app) as base_url:
        deadline = time.monotonic() + 60
        while httpx.get(base_url + "/health").status_code != 200:
            assert time.monotonic() < deadline, httpx.get(base_url + "/health").text
            time.sleep(0.05)
        yield base_url
