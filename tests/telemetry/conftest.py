"""Telemetry fixtures: a real gateway under uvicorn on loopback whose app object the test can reach
(to build spans through its own TracerProvider), and a store with the iris classifier registered."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
from opentelemetry.sdk.trace import TracerProvider
from starlette.applications import Starlette

from gateway.app import create_app
from gateway.config import Settings, load_settings
from gateway.registration import register_version
from gateway.store.registry import RegistryStore
from tests.packages import PackageCache
from tests.servers import free_port

IRIS_ROWS = [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3], [7.7, 3.0, 6.1, 2.3]]


@dataclass
class RunningGateway:
    base_url: str
    app: Starlette
    client: httpx.Client

    @property
    def provider(self) -> TracerProvider:
        provider: TracerProvider = self.app.state.tracer_provider
        return provider


@contextmanager
def run_app(settings: Settings) -> Iterator[RunningGateway]:
    """The gateway app under a real uvicorn server on a free loopback port; stops (lifespan shutdown
    included) when the block ends."""
    app = create_app(settings)
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"gateway-{port}", daemon=True)
    thread.start()
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("gateway test server did not start")
            time.sleep(0.02)
        with httpx.Client(base_url=base_url, timeout=30) as client:
            yield RunningGateway(base_url, app, client)
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        assert not thread.is_alive(), "gateway did not shut down within 60 s"


def gateway_settings(store_uri: str, **values: Any) -> Settings:
    return load_settings({"store_uri": store_uri, "workers": 1, **values}, environ={})


@pytest.fixture
def iris_settings(tmp_path: Any, packages: PackageCache) -> Callable[..., Settings]:
    """Settings for a SQLite store holding the ONNX iris classifier as ``iris@champion`` (the default model)."""
    store_uri = f"sqlite:///{tmp_path}/iris.db"
    store = RegistryStore.open(store_uri)
    try:
        register_version(
            store,
            "iris",
            str(packages.get("onnx_classifier")),
            artifact_roots=[packages.root],
            alias="champion",
            create_model=True,
        )
    finally:
        store.close()

    def make(**values: Any) -> Settings:
        return gateway_settings(
            store_uri,
            artifact_roots=[str(packages.root)],
            **{"serving.default_model": "models:/iris@champion", **values},
        )

    return make


@pytest.fixture
def otel_env(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Set OTEL_* variables for the gateways this test starts (cleared first, restored after)."""
    import os

    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)

    def set_env(**values: str) -> None:
        for name, value in values.items():
            monkeypatch.setenv(name, value)

    return set_env


def wait_until(condition: Callable[[], Any], timeout_s: float = 15.0, what: str = "condition") -> Any:
    """Poll ``condition`` until it returns something truthy; AssertionError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout_s} s (last value {value!r})")
        time.sleep(0.05)


def metric_value(client: httpx.Client, name: str, labels: dict[str, str] | None = None) -> float:
    """One sample of ``GET /metrics`` (0 when absent), parsed with prometheus-client."""
    from prometheus_client.parser import text_string_to_metric_families

    text = client.get("/metrics").text
    wanted = labels or {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in wanted.items()):
                return float(sample.value)
    return 0.0
