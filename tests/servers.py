"""Real servers on loopback for tests: the gateway app under uvicorn in a thread, or as a process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn
from uvicorn._types import ASGIApplication

from gateway.app import create_app
from gateway.config import Settings
from gateway.http_protocol import CoalescingHttpToolsProtocol

VENV_BIN = Path(sys.executable).parent
GATEWAY_BIN = str(VENV_BIN / "gateway")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_up(
    base_url: str,
    *,
    path: str = "/ping",
    timeout_s: float = 60.0,
    process: subprocess.Popen[bytes] | None = None,
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before answering {path}")
        try:
            if httpx.get(base_url + path, timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{base_url}{path} did not answer 200 within {timeout_s} s")


@contextmanager
def run_gateway_in_thread(settings: Settings) -> Iterator[str]:
    """The gateway app under a real uvicorn server on a free loopback port; yields its base URL."""
    with run_app_in_thread(create_app(settings)) as base_url:
        yield base_url


@contextmanager
def run_app_in_thread(app: ASGIApplication) -> Iterator[str]:
    """Any ASGI app (the gateway's, a fake upstream) under a real uvicorn server on a free loopback port,
    lifespan included; yields its base URL and stops the server when the block ends. The HTTP protocol is
    the one ``gateway serve`` runs (gateway/http_protocol.py)."""
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        http=CoalescingHttpToolsProtocol,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
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
        yield base_url
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def gateway_env(store_uri: str, artifact_root: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update({"GATEWAY_STORE_URI": store_uri, "GATEWAY_ARTIFACT_ROOTS": str(artifact_root), **extra})
    return env


def run_cli(args: Sequence[str], env: dict[str, str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([GATEWAY_BIN, *args], env=env, capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"gateway {' '.join(args)} failed ({result.returncode}): {result.stderr}")
    return result


@contextmanager
def run_gateway_process(
    args: Sequence[str], env: dict[str, str], *, ready_path: str = "/ping", log_path: Path | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``gateway serve`` as a real process on a free port; stopped with SIGTERM (then SIGKILL)."""
    port = free_port()
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115
    process = subprocess.Popen(
        [GATEWAY_BIN, "serve", "--host", "127.0.0.1", "--port", str(port), *args],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(base_url, path=ready_path, process=process)
        yield base_url, process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        if log_path:
            log.close()  # type: ignore[union-attr]
