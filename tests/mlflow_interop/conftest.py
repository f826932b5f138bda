"""A real ``mlflow server`` on loopback for the MLflow interop tests: a temp SQLite backend store, a temp
artifacts directory served through its artifact proxy (``--serve-artifacts``), one worker; started once per
module with a bounded wait, killed at the end."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.servers import VENV_BIN, free_port

# mlflow server imports its whole server stack and creates its tables before it answers: tens of seconds
# on a busy machine.
STARTUP_TIMEOUT_S = 240.0


@dataclass
class MlflowServer:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]


def start_mlflow_server(root: Path) -> MlflowServer:
    port = free_port()
    log_path = root / "mlflow-server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "GATEWAY_"))}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                str(VENV_BIN / "mlflow"),
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
                "--backend-store-uri",
                f"sqlite:///{root}/mlflow.db",
                "--artifacts-destination",
                str(root / "artifacts"),
                "--serve-artifacts",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = MlflowServer(f"http://127.0.0.1:{port}", process, log_path)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {process.returncode}:\n{server.log_tail()}")
        try:
            if httpx.get(server.url + "/health", timeout=2.0).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(
                f"mlflow server did not answer /health within {STARTUP_TIMEOUT_S} s:\n{server.log_tail()}"
            )
        time.sleep(0.25)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    server = start_mlflow_server(tmp_path_factory.mktemp("mlflow-server"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def mlflow_client_env(mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """MLflow's fluent API and MlflowClient() in this test talk to the real server."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", mlflow_server.url)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    return mlflow_server.url
