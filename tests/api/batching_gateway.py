"""A real gateway for the batching and overload tests, and helpers to drive it with many concurrent
async clients and to hold a model busy without depending on timing.

Holding a model: the ``pyfunc_gated`` package waits inside its call while a gate file exists when a
row holds ``HOLD_X``. A test creates the gate, sends one such request (it starts at once on the idle
model), waits until ``/models`` shows the model running, queues what it wants behind it, checks, and
removes the gate.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from gateway.config import load_settings
from gateway.registration import register_version
from gateway.store.registry import RegistryStore
from tests.packages import HOLD_X, PackageCache, build_gated_pyfunc_package
from tests.servers import run_gateway_in_thread


@dataclass
class BatchingGateway:
    base_url: str
    client: httpx.Client
    gate: Path
    store_uri: str
    artifact_root: Path

    def model(self, name: str) -> dict[str, Any]:
        """The ``/models`` entry of the (one) loaded version of ``name``."""
        entries = [e for e in self.client.get("/models").json()["models"] if e["name"] == name]
        assert len(entries) == 1, entries
        return dict(entries[0])

    def wait_for(self, name: str, condition: Any, what: str, timeout_s: float = 30.0) -> dict[str, Any]:
        """Poll ``/models`` until ``condition(entry)`` holds for ``name`` (a bounded wait)."""
        deadline = time.monotonic() + timeout_s
        while True:
            for entry in self.client.get("/models").json()["models"]:
                if entry["name"] == name and condition(entry):
                    return dict(entry)
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting until {what}")
            time.sleep(0.01)

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        """``GET /metrics`` parsed with prometheus-client: (sample name, labels) -> value."""
        from prometheus_client.parser import text_string_to_metric_families

        response = self.client.get("/metrics")
        assert response.status_code == 200, response.text
        return {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples
        }

    @contextlib.contextmanager
    def held(self, name: str) -> Iterator[Any]:
        """Keep ``name`` busy on one request for the duration of the block; yields that request's future
        (a ``concurrent.futures.Future`` of its response)."""
        import concurrent.futures

        self.gate.touch()
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        body = {"dataframe_split": {"columns": ["x"], "data": [[HOLD_X]]}}
        blocker = pool.submit(httpx.post, f"{self.base_url}/models/{name}@prod/invocations", json=body, timeout=60)
        try:
            self.wait_for(name, lambda e: e["queue"]["running"], f"{name} is running the held request")
            yield blocker
        finally:
            self.gate.unlink(missing_ok=True)
            response = blocker.result(timeout=60)
            pool.shutdown()
            assert response.status_code == 200, response.text


def register(
    store_uri: str, name: str, path: Path, roots: Sequence[Path], tags: Mapping[str, str] | None = None
) -> int:
    store = RegistryStore.open(store_uri)
    try:
        version = register_version(
            store, name, str(path), artifact_roots=list(roots), alias="prod", create_model=True, tags=tags
        )
    finally:
        store.close()
    return version.version


def sample(metrics: Mapping[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    """One sample's value (0 when the series does not exist yet)."""
    return metrics.get((name, frozenset(labels.items())), 0.0)


@contextlib.contextmanager
def batching_gateway(
    packages: PackageCache,
    tmp_path: Path,
    models: Mapping[str, str],
    *,
    tags: Mapping[str, Mapping[str, str]] | None = None,
    settings: Mapping[str, Any] | None = None,
) -> Iterator[BatchingGateway]:
    """A gateway serving ``models`` ({name: package kind or "gated"}) at ``name@prod``; every model runs
    in its thread (``inline_max_us=0``) so every request goes through the batcher."""
    gate = tmp_path / "gate"
    roots = [packages.root, tmp_path]
    gated = None
    store_uri = f"sqlite:///{tmp_path}/store.db"
    for name, kind in models.items():
        if kind == "gated":
            if gated is None:
                gated = build_gated_pyfunc_package(tmp_path / "gated", gate_path=gate)
            path = gated
        else:
            path = packages.get(kind)  # type: ignore[arg-type]
        register(store_uri, name, path, roots, (tags or {}).get(name))
    config = load_settings(
        {
            "store_uri": store_uri,
            "artifact_roots": [str(r) for r in roots],
            "workers": 1,
            "serving.inline_max_us": 0,
            "serving.refresh_interval_s": 0.2,
            "serving.preload": [f"models:/{name}@prod" for name in models],
            **(settings or {}),
        },
        environ={},
    )
    with run_gateway_in_thread(config) as base_url, httpx.Client(base_url=base_url, timeout=60) as client:
        deadline = time.monotonic() + 60
        while client.get("/health").status_code != 200:
            assert time.monotonic() < deadline, client.get("/health").text
            time.sleep(0.05)
        yield BatchingGateway(base_url, client, gate, store_uri, tmp_path)


def post_concurrently(
    base_url: str, requests: Sequence[tuple[str, Any, Mapping[str, str]]], *, clients: int = 8
) -> list[httpx.Response]:
    """POST every (path, json body, headers) at once from ``clients`` async clients; answers in order."""

    async def run() -> list[httpx.Response]:
        async with contextlib.AsyncExitStack() as stack:
            pool = [
                await stack.enter_async_context(
                    httpx.AsyncClient(base_url=base_url, timeout=60, limits=httpx.Limits(max_connections=64))
                )
                for _ in range(clients)
            ]
            return list(
                await asyncio.gather(
                    *(
                        pool[i % clients].post(path, json=body, headers=dict(headers))
                        for i, (path, body, headers) in enumerate(requests)
                    )
                )
            )

    return asyncio.run(run())


def same_answer(a: Any, b: Any) -> bool:
    """Equal structure, keys, strings and integers; floats equal to float32 precision. onnxruntime
    takes another kernel for a 1-row MatMul than for a larger one, so a batched float32 probability
    may differ from the unbatched one in its last bits (measured: up to 5.5e-6 relative, calling
    onnxruntime directly on 1 row vs 150); a row answered with another row's values would differ far
    more, and labels are compared exactly."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_answer(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_answer(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=2e-5, abs_tol=1e-9)
    return type(a) is type(b) and a == b
