"""SIGTERM while requests are in flight: the gateway stops accepting, answers every request it
accepted completely, then exits with no process left behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.packages import PackageCache
from tests.servers import GATEWAY_BIN, free_port, gateway_env, run_cli, wait_until_up


def _requests_read_by_the_server(port: int) -> int:
    """Server-side connections on ``port`` that have received bytes and hold none unread: the gateway
    has read those requests (each is small, one segment), so uvicorn counts them as in flight."""
    out = subprocess.run(
        ["ss", "-tniH", "state", "established", f"( sport = :{port} )"], capture_output=True, text=True, check=True
    ).stdout
    read = 0
    lines = out.splitlines()
    for socket_line, info_line in zip(lines[::2], lines[1::2], strict=False):
        unread = int(socket_line.split()[0])  # Recv-Q
        if unread == 0 and re.search(r"bytes_received:[1-9]", info_line):
            read += 1
    return read


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_drains_in_flight_requests(packages: PackageCache, tmp_path: Path, workers: int) -> None:
    slow = packages.get("pyfunc_slow")
    env = gateway_env(f"sqlite:///{tmp_path}/store.db", packages.root)
    run_cli(["models", "register", "slow", str(slow), "--alias", "prod"], env)
    port = free_port()
    process = subprocess.Popen(
        [
            GATEWAY_BIN,
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--model",
            "models:/slow@prod",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(base_url, path="/health", process=process)
        worker_pids = _children(process.pid)
        results: list[object] = []
        lock = threading.Lock()

        def call(i: int) -> None:
            body = {"dataframe_split": {"columns": ["x"], "data": [[float(i)]]}}
            try:
                response = httpx.post(base_url + "/invocations", json=body, timeout=30)
                outcome: object = (response.status_code, response.json())
            except httpx.HTTPError as exc:  # only acceptable before the request was accepted
                outcome = exc
            with lock:
                results.append((i, outcome))

        threads = [threading.Thread(target=call, args=(i,)) for i in range(6)]
        for thread in threads:
            thread.start()
        # SIGTERM once the gateway has read all six requests (each takes 0.4 s in the model).
        deadline = time.monotonic() + 20
        while _requests_read_by_the_server(port) < 6:
            assert time.monotonic() < deadline, "the gateway did not read the six requests within 20 s"
            time.sleep(0.005)
        process.send_signal(signal.SIGTERM)  # what Kubernetes sends to the container's main process
        for thread in threads:
            thread.join(timeout=30)
        # uvicorn re-raises the signal after its graceful shutdown, so a clean exit may read -SIGTERM.
        assert process.wait(timeout=30) in (0, -signal.SIGTERM)
        assert len(results) == 6
        for i, outcome in results:
            assert outcome == (200, {"predictions": [{"y": float(i)}]}), outcome
        # Stopped accepting: a new connection is refused.
        with pytest.raises(httpx.ConnectError):
            httpx.get(base_url + "/ping", timeout=2)
        for pid in worker_pids:
            assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
