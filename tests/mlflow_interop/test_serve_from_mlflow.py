"""`gateway serve --model models:/iris@champion` with registry.kind mlflow against a real `mlflow server`:
the models a team logged with MLflow 3.18 (scikit-learn and ONNX) answer as MLflow's own pyfunc does; an alias
moved in MLflow under load switches traffic within the refresh interval with zero failed requests; with MLflow
stopped, the loaded versions keep serving and /health says MLflow is unreachable."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from gateway.config import load_settings
from tests.mlflow_interop.conftest import MlflowServer
from tests.mlflow_interop.logging_models import log_onnx_iris, log_sklearn_iris, set_alias
from tests.packages import IRIS_COLUMNS, iris_frame, onnx_iris_input
from tests.servers import gateway_env, run_gateway_in_thread, run_gateway_process

REFRESH_S = 0.5
ROWS = slice(0, 150, 7)


def _wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        time.sleep(0.1)


def _split_body() -> dict[str, Any]:
    frame = iris_frame(ROWS)
    return {"dataframe_split": {"columns": list(IRIS_COLUMNS), "data": frame.to_numpy().tolist()}}


def _mlflow_predictions(ref: str, data: Any) -> list[Any]:
    import mlflow.pyfunc

    return np.asarray(mlflow.pyfunc.load_model(ref).predict(data)).tolist()


class _ClientLoop:
    """Threads posting to /invocations until stopped, each request on a new connection (every worker answers)."""

    def __init__(self, base_url: str, threads: int = 4) -> None:
        self.base_url = base_url
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.answers: list[tuple[float, str]] = []
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                response = httpx.post(self.base_url + "/invocations", json=_split_body(), timeout=30)
            except httpx.HTTPError as exc:
                with self.lock:
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                continue
            with self.lock:
                if response.status_code == 200:
                    self.answers.append((time.monotonic(), response.headers["x-model-version"]))
                else:
                    self.failures.append(f"{response.status_code}: {response.text}")

    def versions_since(self, moment: float) -> list[str]:
        with self.lock:
            return [version for at, version in self.answers if at >= moment]

    def __enter__(self) -> _ClientLoop:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)


def test_onnx_model_logged_in_mlflow_answers_as_mlflow_does(mlflow_client_env: str, tmp_path: Path) -> None:
    version = log_onnx_iris("iris-onnx")
    set_alias("iris-onnx", "champion", version)
    x = onnx_iris_input(ROWS)
    import mlflow.pyfunc

    expected = mlflow.pyfunc.load_model("models:/iris-onnx@champion").predict(x)  # {output name: array}
    settings = load_settings(
        {
            "store_uri": f"sqlite:///{tmp_path}/store.db",
            "artifact_roots": [str(tmp_path / "models")],
            "workers": 1,
            "registry.kind": "mlflow",
            "registry.tracking_uri": mlflow_client_env,
        },
        environ={},
    )
    with run_gateway_in_thread(settings) as url:
        # Not preloaded: the per-model route makes the gateway follow the model in MLflow on first use.
        answer = httpx.post(f"{url}/models/iris-onnx@champion/invocations", json={"inputs": x.tolist()}, timeout=60)
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-model-version"] == version
        predictions = answer.json()["predictions"]
        if isinstance(predictions, list):  # one record per row
            predictions = {name: [row[name] for row in predictions] for name in expected}
        assert sorted(predictions) == sorted(expected) == ["label", "probabilities"]
        assert np.asarray(predictions["label"]).tolist() == expected["label"].tolist()
        np.testing.assert_allclose(np.asarray(predictions["probabilities"]), expected["probabilities"], rtol=1e-6)
        cache = Path(settings.registry.cache_dir or "")
        assert any(p.name.startswith("sha256-") for p in cache.iterdir())  # downloaded into the cache


def test_file_artifacts_load_in_place_only_under_the_artifact_roots(mlflow_client_env: str, tmp_path: Path) -> None:
    """An experiment whose artifacts live on a shared file system (artifact_location file://...): the download
    URI is a file: URI, loaded where it is when it lies under an artifact root, refused when it does not."""
    import mlflow
    from mlflow import MlflowClient

    shared = tmp_path / "shared-artifacts"
    experiment = MlflowClient().create_experiment("on-shared-disk", artifact_location=shared.as_uri())
    mlflow.set_experiment(experiment_id=experiment)
    try:
        set_alias("iris-local", "champion", log_sklearn_iris("iris-local"))
    finally:
        mlflow.set_experiment("Default")
    expected = _mlflow_predictions("models:/iris-local@champion", iris_frame(ROWS))

    def settings(roots: list[Path]) -> Any:
        return load_settings(
            {
                "store_uri": f"sqlite:///{tmp_path}/store-{len(roots)}.db",
                "artifact_roots": [str(root) for root in roots],
                "workers": 1,
                "registry.kind": "mlflow",
                "registry.tracking_uri": mlflow_client_env,
            },
            environ={},
        )

    with run_gateway_in_thread(settings([shared])) as url:
        answer = httpx.post(f"{url}/models/iris-local@champion/invocations", json=_split_body(), timeout=60)
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"] == expected
    elsewhere = tmp_path / "other-root"
    elsewhere.mkdir()
    with run_gateway_in_thread(settings([elsewhere, tmp_path / "x"])) as url:
        refused = httpx.post(f"{url}/models/iris-local@champion/invocations", json=_split_body(), timeout=60)
        assert refused.status_code >= 400
        assert "outside the artifact roots" in refused.text


# Last in this module: it stops the module's MLflow server.
def test_serve_follow_alias_and_survive_mlflow_stopping(
    mlflow_server: MlflowServer, mlflow_client_env: str, tmp_path: Path
) -> None:
    set_alias("iris", "champion", log_sklearn_iris("iris", regularization=1.0))
    expected_v1 = _mlflow_predictions("models:/iris@champion", iris_frame(ROWS))
    env = gateway_env(
        f"sqlite:///{tmp_path}/store.db",
        tmp_path / "models",
        GATEWAY_REGISTRY_KIND="mlflow",
        GATEWAY_SERVING_REFRESH_INTERVAL_S=str(REFRESH_S),
        MLFLOW_TRACKING_URI=mlflow_server.url,
    )
    with run_gateway_process(
        ["--model", "models:/iris@champion", "--workers", "2"],
        env,
        ready_path="/health",
        log_path=tmp_path / "gateway.log",
    ) as (url, _process):
        first = httpx.post(url + "/invocations", json=_split_body(), timeout=30)
        assert first.status_code == 200, first.text
        assert first.headers["x-model-version"] == "1"
        assert first.json()["predictions"] == expected_v1

        # Version 2 is a different model: the alias moves in MLflow while clients keep sending.
        version_2 = log_sklearn_iris("iris", regularization=0.01)
        assert version_2 == "2"
        expected_v2 = _mlflow_predictions("models:/iris/2", iris_frame(ROWS))
        assert expected_v2 != expected_v1
        with _ClientLoop(url) as load:
            _wait_for(lambda: len(load.versions_since(0)) > 20, 60, "the client loop gets answers")
            moved_at = time.monotonic()
            set_alias("iris", "champion", version_2)
            # Within the refresh interval plus the new version's download and load; no timing asserted.
            _wait_for(
                lambda: load.versions_since(moved_at)[-8:] == ["2"] * 8,
                60,
                "every worker answers with version 2",
            )
        assert load.failures == []
        assert "1" in load.versions_since(0)
        second = httpx.post(url + "/invocations", json=_split_body(), timeout=30)
        assert second.headers["x-model-version"] == "2"
        assert second.json()["predictions"] == expected_v2

        mlflow_server.stop()

        def mlflow_reported_unreachable() -> bool:
            health = httpx.get(url + "/health", timeout=10)
            error = health.json().get("registry_error", "")
            return health.status_code == 200 and f"MLflow at {mlflow_server.url} is unreachable" in error

        # Every worker has noticed (new connections land on both), then the loaded version still answers.
        _wait_for(lambda: all(mlflow_reported_unreachable() for _ in range(6)), 30, "/health names MLflow")
        for _ in range(10):
            still = httpx.post(url + "/invocations", json=_split_body(), timeout=30)
            assert still.status_code == 200, still.text
            assert still.headers["x-model-version"] == "2"
            assert still.json()["predictions"] == expected_v2
        metrics = httpx.get(url + "/metrics", timeout=10).text
        failures = [
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith('gateway_registry_refresh_failures_total{registry="mlflow"}')
        ]
        assert failures and failures[0] > 0
