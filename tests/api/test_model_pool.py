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
        register_version(
            store,
            kind,
            str(packages.get(kind)),
            artifact_roots=[packages.root],  # type: ignore[arg-type]
            alias="prod",
            create_model=True,
        )
    store.close()
    settings = load_settings(
        {
            "store_uri": store_uri,
            "artifact_roots": [str(packages.root)],
            "workers": 1,
            "serving.max_loaded_versions": 2,
        },
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
        {
            "store_uri": store_uri,
            "artifact_roots": [str(packages.root)],
            "workers": 1,
            "serving.default_model": "models:/late@prod",
            "serving.refresh_interval_s": 0.2,
        },
        environ={},
    )
    with run_gateway_in_thread(settings) as base_url, httpx.Client(base_url=base_url, timeout=60) as client:
        health = client.get("/health")
        assert health.status_code == 503
        assert "late" in str(health.json().get("errors", health.json()))
        missing = client.post("/invocations", json=ONNX_BODY)
        assert missing.status_code == 404 and "late" in missing.json()["message"]

        store = RegistryStore.open(store_uri)
        register_version(
            store,
            "late",
            str(packages.get("onnx_classifier")),
            artifact_roots=[packages.root],
            alias="prod",
            create_model=True,
        )
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


def test_alias_move_swaps_without_failures_and_a_broken_version_keeps_the_old(
    packages: PackageCache, tmp_path: Path
) -> None:
    store_uri = f"sqlite:///{tmp_path}/store.db"
    good = packages.copy("onnx_classifier", packages.root / f"swap_good_{tmp_path.name}")
    newer = packages.copy("onnx_label_only", packages.root / f"swap_newer_{tmp_path.name}")
    broken = packages.copy("onnx_classifier", packages.root / f"swap_broken_{tmp_path.name}")
    (broken / "model.onnx").write_bytes(b"not an onnx graph")  # registers (the file exists), cannot load
    store = RegistryStore.open(store_uri)
    for path in (good, newer, broken):
        register_version(store, "swap", str(path), artifact_roots=[packages.root], create_model=True)
    store.set_alias("swap", "prod", 1)
    settings = load_settings(
        {
            "store_uri": store_uri,
            "artifact_roots": [str(packages.root)],
            "workers": 1,
            "serving.default_model": "models:/swap@prod",
            "serving.refresh_interval_s": 0.1,
        },
        environ={},
    )
    with run_gateway_in_thread(settings) as base_url, httpx.Client(base_url=base_url, timeout=60) as client:
        assert client.get("/health").status_code == 200
        first = client.post("/invocations", json=ONNX_BODY)
        assert first.headers["x-model-version"] == "1"

        # A broken target: every request keeps being answered by version 1, and the failure shows.
        store.set_alias("swap", "prod", 3)
        deadline = time.monotonic() + 10
        models = client.get("/models").json()
        while not models["failed"] and time.monotonic() < deadline:
            response = client.post("/invocations", json=ONNX_BODY)
            assert response.status_code == 200 and response.headers["x-model-version"] == "1", response.text
            models = client.get("/models").json()
        assert [f["version"] for f in models["failed"]] == [3]
        assert client.post("/invocations", json=ONNX_BODY).headers["x-model-version"] == "1"
        health = client.get("/health")
        assert health.status_code == 200 and health.json()["failed_versions"][0]["version"] == 3

        # A good target: requests never fail and switch to version 2 once it is loaded.
        store.set_alias("swap", "prod", 2)
        deadline = time.monotonic() + 15
        versions = []
        while time.monotonic() < deadline and versions[-5:] != ["2"] * 5:
            response = client.post("/invocations", json=ONNX_BODY)
            assert response.status_code == 200, response.text
            versions.append(response.headers["x-model-version"])
        assert versions[-5:] == ["2"] * 5
        assert set(versions) <= {"1", "2"}
        assert response.json() == {"predictions": {"label": [0]}}
        # Version 1 is no longer pointed at by any alias: it is unloaded.
        deadline = time.monotonic() + 10
        while 1 in {m["version"] for m in client.get("/models").json()["models"]} and time.monotonic() < deadline:
            time.sleep(0.1)
        assert {m["version"] for m in client.get("/models").json()["models"]} == {2}
    store.close()
