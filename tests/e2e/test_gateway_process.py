"""`gateway` as a newcomer runs it: real processes, the CLI, HTTP on loopback."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.packages import PackageCache
from tests.servers import GATEWAY_BIN, gateway_env, run_cli, run_gateway_process

README_BODY = {
    "dataframe_split": {
        "columns": ["sepal_length", "sepal_width", "petal_length", "petal_width"],
        "data": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]],
    }
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="module")
def demo_package(workdir: Path) -> Path:
    out = workdir / "models" / "iris"
    subprocess.run(
        [str(Path(GATEWAY_BIN).parent / "python"), "-m", "gateway.demo", "--out", str(out)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return out


def test_readme_flow_register_serve_curl(workdir: Path, demo_package: Path) -> None:
    env = gateway_env(f"sqlite:///{workdir}/readme.db", workdir / "models")
    out = run_cli(["models", "register", "iris", str(demo_package), "--alias", "champion"], env)
    assert "version 1" in out.stdout
    listing = run_cli(["models", "list"], env).stdout
    assert "iris" in listing and "champion=1" in listing
    assert "@champion" in run_cli(["models", "show", "iris"], env).stdout

    with run_gateway_process(["--model", "models:/iris@champion", "--workers", "1"], env, ready_path="/health") as (
        base_url,
        _,
    ):
        response = httpx.post(base_url + "/invocations", json=README_BODY, timeout=30)
        assert response.status_code == 200, response.text
        assert response.headers["x-model-name"] == "iris"
        assert response.headers["x-model-version"] == "1"
        predictions = response.json()["predictions"]
        assert [row["label"] for row in predictions] == [0, 2]
        assert all(len(row["probabilities"]) == 3 for row in predictions)


def test_alias_move_reaches_every_worker(workdir: Path, demo_package: Path) -> None:
    """Two workers, an alias moved by the CLI (another process): both workers switch within the
    refresh interval, without a restart."""
    models = workdir / "models"
    env = gateway_env(f"sqlite:///{workdir}/workers.db", models, GATEWAY_SERVING_REFRESH_INTERVAL_S="0.5")
    second = PackageCache(workdir / "cache").copy("onnx_label_only", models / "label_only")
    run_cli(["models", "register", "iris", str(demo_package), "--alias", "champion"], env)
    run_cli(["models", "register", "iris", str(second)], env)
    with (
        run_gateway_process(["--model", "models:/iris@champion", "--workers", "2"], env, ready_path="/health") as (
            base_url,
            _,
        ),
        httpx.Client(base_url=base_url) as client,
    ):
        body = README_BODY
        versions = {client.post("/invocations", json=body).headers["x-model-version"] for _ in range(20)}
        assert versions == {"1"}
        run_cli(["models", "alias", "iris", "champion", "2"], env)
        deadline = time.monotonic() + 30
        seen_new = 0
        while time.monotonic() < deadline and seen_new < 40:
            # New connections spread over both workers.
            response = httpx.post(base_url + "/invocations", json=body, timeout=30)
            assert response.status_code == 200, response.text
            seen_new = seen_new + 1 if response.headers["x-model-version"] == "2" else 0
        assert seen_new >= 40, "the alias move did not reach every worker"
        assert response.json() == {"predictions": {"label": [0, 2]}}


def test_llm_routes_and_keys_reach_every_worker(workdir: Path) -> None:
    """Two workers get the typed llm and auth sections through the JSON that hands them Settings."""
    key = "gw-key-e2e"
    llm = {"routes": [{"name": name, "targets": [{"base_url": "http://127.0.0.1:9/v1", "model": "m"}]}
                      for name in ("gpt-4o-mini", "llama")]}  # fmt: skip
    env = gateway_env(
        f"sqlite:///{workdir}/llm.db",
        workdir / "models",
        GATEWAY_LLM=json.dumps(llm),
        GATEWAY_AUTH=json.dumps({"keys": [hashlib.sha256(key.encode()).hexdigest()]}),
    )
    with run_gateway_process(["--workers", "2"], env) as (base_url, _):
        for _ in range(20):  # a new connection each time, so both workers answer some
            listed = httpx.get(base_url + "/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=30)
            assert listed.status_code == 200, listed.text
            assert [model["id"] for model in listed.json()["data"]] == ["gpt-4o-mini", "llama"]
            assert httpx.get(base_url + "/v1/models", timeout=30).status_code == 401


def test_bad_configuration_stops_with_key_and_value(workdir: Path) -> None:
    env = gateway_env(f"sqlite:///{workdir}/bad.db", workdir / "models", GATEWAY_PORT="eighty")
    result = run_cli(["serve"], env, check=False)
    assert result.returncode == 2
    assert "GATEWAY_PORT" in result.stderr and "'eighty'" in result.stderr
    config = workdir / "bad.yaml"
    config.write_text("serving:\n  refresh_interval_s: -1\n")
    result = run_cli(["serve", "--config", str(config)], env | {"GATEWAY_PORT": "8080"}, check=False)
    assert result.returncode == 2
    assert "refresh_interval_s" in result.stderr and "-1" in result.stderr


def test_body_limit_and_health_before_models(workdir: Path, demo_package: Path) -> None:
    env = gateway_env(f"sqlite:///{workdir}/limit.db", workdir / "models", GATEWAY_SERVING_MAX_BODY_BYTES="200")
    run_cli(["models", "register", "iris", str(demo_package), "--alias", "champion"], env)
    with run_gateway_process(["--model", "models:/iris@champion", "--workers", "1"], env, ready_path="/health") as (
        base_url,
        _,
    ):
        big = {"dataframe_split": {**README_BODY["dataframe_split"], "data": [[5.1, 3.5, 1.4, 0.2]] * 50}}
        response = httpx.post(base_url + "/invocations", json=big, timeout=30)
        assert response.status_code == 413
        assert "200 bytes" in response.json()["message"]
    # A model that cannot be resolved keeps /health at 503 with the reason, while /ping answers.
    with run_gateway_process(["--model", "models:/iris@nosuch", "--workers", "1"], env) as (base_url, _):
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            health = httpx.get(base_url + "/health", timeout=5)
            if health.json().get("errors"):
                break
            time.sleep(0.1)
        assert health.status_code == 503
        assert "nosuch" in str(health.json()["errors"])


def test_help_is_truthful() -> None:
    out = subprocess.run([GATEWAY_BIN, "serve", "--help"], capture_output=True, text=True, check=True).stdout
    for flag in ("--config", "--host", "--port", "--workers", "--model", "--store-uri", "--artifact-root"):
        assert flag in out
    assert shutil.which(GATEWAY_BIN) is not None


def test_serving_beyond_loopback_without_keys_is_refused_naming_allow_open(workdir: Path) -> None:
    """Open by accident is refused before anything binds: exit 2, the message names auth.keys and auth.allow_open."""
    env = gateway_env(f"sqlite:///{workdir}/open.db", workdir / "models")
    result = run_cli(["serve", "--host", "0.0.0.0", "--port", "1"], env, check=False)
    assert result.returncode == 2, result.stderr
    assert "auth.allow_open" in result.stderr and "auth.keys" in result.stderr and "'0.0.0.0'" in result.stderr
