"""Multi-model serving on a real gateway: load on first use, LRU unloading past the cap, and
/health following a preloaded reference that only becomes resolvable after start."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from gateway.config import load_settings
from gateway.registration import register_version
from gateway.store.registry import RegistryStore
from tests.packages import IRIS_COLUMNS, PackageCache
from tests.servers import run_gateway_in_thread

ONNX_BODY = {"inputs": [[5.1, 3.5, 1.4, 0.2]]}
TABLE_BODY = {"dataframe_split": {"columns": IRIS_COLUMNS, "data": [[5.1, 3.5, 1.4, 0.2]]}}


def _loaded(client: httpx.Client) -> set[str]:
    return {m["name"] for m in client.get("/models").json()["models"]}


def test_lru_unloads_least_recently_used_and_reloads_on_demand(packages: PackageCache, tmp_path: Path) -> None:
    store_uri = f"sqlite:///{tmp_path}/store.db"
    store = RegistryStore.open(store_uri)
    for kind in ("onnx_classifier", "onnx_label_only", "sklearn_skops"):
        register_version(store, kind, str(packages.get(kind)), artifact_roots=[packages.root],  # type: ignore[arg-type]
                         alias="prod", create_model=True)
    store.close()
    settings = load_settings(
        {"store_uri": store_uri, "artifact_roots": [str(packages.root)], "workers": 1,
         "serving.max_loaded_versions": 2},
        environ={},
    )
    with run_gateway_in_thread(settings) as base_url, httpx.Client(base_url=base_url, timeout=60) as client:
        assert _loaded(client) == set()  # nothing preloaded: loaded on first use
        assert client.post("/models/onnx_classifier@prod/invocations", json=ONNX_BODY).status_code == 200
        assert client.post("/models/onnx_label_only@prod/invocations", json=ONNX_BODY).status_code == 200
        assert _loaded(client) == {"onnx_classifier", "onnx_label_only"}
        # Touch the classifier so the label-only model is the least recently used, then go past the cap.
        assert client.post("/models/onnx_classifier@prod/invocations", json=ONNX_BODY).status_code == 200
        third = client.post("/models/sklearn_skops@prod/invocations", json=TABLE_BODY)
        assert third.status_code == 200 and third.json() == {"predictions": [0]}
        assert _loaded(client) == {"onnx_classifier", "sklearn_skops"}
        again = client.post("/models/onnx_label_only@prod/invocations", json=ONNX_BODY)
        assert again.status_code == 200 and again.json() == {"predictions": {"label": [0]}}
        assert len(_loaded(client)) == 2


def test_health_follows_a_reference_registered_after_start(packages: PackageCache, tmp_path: Path) -> None:
    store_uri = f"sqlite:///{tmp_path}/store.db"
    RegistryStore.open(store_uri).close()
    settings = load_settings(
        {"store_uri": store_uri, "artifact_roots": [str(packages.root)], "workers": 1,
         "serving.default_model": "models:/late@prod", "serving.refresh_interval_s": 0.2},
        environ={},
    )
    with run_gateway_in_thread(settings) as base_url, httpx.Client(base_url=base_url, timeout=60) as client:
        health = client.get("/health")
        assert health.status_code == 503
        assert "late" in str(health.json().get("errors", health.json()))
        missing = client.post("/invocations", json=ONNX_BODY)
        assert missing.status_code == 404 and "late" in missing.json()["message"]

        store = RegistryStore.open(store_uri)
        register_version(store, "late", str(packages.get("onnx_classifier")), artifact_roots=[packages.root],
                         alias="prod", create_model=True)
        store.close()
        # An unknown reference refreshes the view (at most four times a second), and the refresher
        # polls every 0.2 s: the model is found within moments, with no restart.
        deadline = time.monotonic() + 15
        served = client.post("/invocations", json=ONNX_BODY)
        while served.status_code == 404 and time.monotonic() < deadline:
            time.sleep(0.05)
            served = client.post("/invocations", json=ONNX_BODY)
        assert served.status_code == 200, served.text
        assert served.headers["x-model-name"] == "late"
        assert client.get("/health").status_code == 200
