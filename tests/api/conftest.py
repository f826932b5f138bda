"""A real gateway (uvicorn on loopback) serving every test package kind, and MLflow's own
scoring server for the same packages, to compare answers body by body."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.config import load_settings
from gateway.registration import register_version
from gateway.store.registry import RegistryStore
from tests.packages import PackageCache
from tests.servers import run_gateway_in_thread

SERVED_KINDS = (
    "sklearn_skops",
    "sklearn_pickle",
    "sklearn_cloudpickle",
    "sklearn_proba",
    "onnx_classifier",
    "onnx_label_only",
    "onnx_regressor",
    "onnx_multi_input",
    "pyfunc_custom",
)


@dataclass
class ServedGateway:
    base_url: str
    client: httpx.Client
    packages: dict[str, Path]
    store_uri: str
    _mlflow_clients: dict[str, Any] = field(default_factory=dict)

    def invoke(
        self,
        kind: str,
        body: Any = None,
        *,
        content: bytes | None = None,
        content_type: str | None = "application/json",
    ) -> httpx.Response:
        headers = {"Content-Type": content_type} if content_type else {}
        if content is None:
            import orjson

            content = orjson.dumps(body)
        return self.client.post(f"/models/{kind}@champion/invocations", content=content, headers=headers)

    def mlflow(self, kind: str) -> Any:
        """A TestClient on ``mlflow.pyfunc.scoring_server.init(model)`` for this package."""
        if kind not in self._mlflow_clients:
            import mlflow.pyfunc
            from mlflow.pyfunc import scoring_server
            from starlette.testclient import TestClient

            model = mlflow.pyfunc.load_model(str(self.packages[kind]))
            self._mlflow_clients[kind] = TestClient(scoring_server.init(model))
        return self._mlflow_clients[kind]

    def mlflow_invoke(
        self,
        kind: str,
        body: Any = None,
        *,
        content: bytes | None = None,
        content_type: str = "application/json",
    ) -> Any:
        import orjson

        data = content if content is not None else orjson.dumps(body)
        return self.mlflow(kind).post("/invocations", content=data, headers={"Content-Type": content_type})


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory, packages: PackageCache) -> Iterator[ServedGateway]:
    root = tmp_path_factory.mktemp("served")
    models = packages.root
    paths = {kind: packages.get(kind) for kind in SERVED_KINDS}  # type: ignore[arg-type]
    store_uri = f"sqlite:///{root}/store.db"
    store = RegistryStore.open(store_uri)
    for kind, path in paths.items():
        register_version(store, kind, str(path), artifact_roots=[models], alias="champion", create_model=True)
    store.close()
    settings = load_settings(
        {
            "store_uri": store_uri,
            "artifact_roots": [str(models)],
            "workers": 1,
            "serving.default_model": "models:/onnx_classifier@champion",
        },
        environ={},
    )
    with run_gateway_in_thread(settings) as base_url, httpx.Client(base_url=base_url, timeout=60) as client:
        yield ServedGateway(base_url, client, paths, store_uri)
