"""Alias moves on a real 2-worker gateway while clients keep sending: not one request fails, every
worker follows the good move, and a broken target leaves the old version serving everywhere."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import httpx

from tests.packages import PackageCache
from tests.servers import gateway_env, run_cli, run_gateway_process

BODY = {"inputs": [[5.1, 3.5, 1.4, 0.2]]}
REFRESH_S = 0.5
LOAD_THREADS = 6


class _Load:
    """Threads posting in a loop, each request on a new connection so that both workers answer."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.versions: list[tuple[float, str]] = []
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(LOAD_THREADS)]

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                response = httpx.post(self.base_url + "/invocations", json=BODY, timeout=30)
            except httpx.HTTPError as exc:
                with self.lock:
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                continue
            with self.lock:
                if response.status_code != 200:
                    self.failures.append(f"{response.status_code}: {response.text}")
                else:
                    self.versions.append((time.monotonic(), response.headers["x-model-version"]))

    def __enter__(self) -> _Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)

    def since(self, moment: float) -> list[str]:
        with self.lock:
            return [version for at, version in self.versions if at >= moment]


def _wait_for(condition: object, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


def test_alias_moves_under_load_on_two_workers(packages: PackageCache, tmp_path: Path) -> None:
    models = tmp_path / "models"
    v1 = packages.copy("onnx_classifier", models / "v1")
    broken = packages.copy("onnx_classifier", models / "broken")
    (broken / "model.onnx").write_bytes(b"not an onnx graph")  # registers (the file exists), cannot load
    v3 = packages.copy("onnx_label_only", models / "v3")
    env = gateway_env(f"sqlite:///{tmp_path}/store.db", models, GATEWAY_SERVING_REFRESH_INTERVAL_S=str(REFRESH_S))
    run_cli(["models", "register", "iris", str(v1), "--alias", "champion"], env)
    run_cli(["models", "register", "iris", str(broken)], env)
    run_cli(["models", "register", "iris", str(v3)], env)

    with (
        run_gateway_process(["--model", "models:/iris@champion", "--workers", "2"], env, ready_path="/health") as (
            base_url,
            _,
        ),
        _Load(base_url) as load,
    ):
        assert _wait_for(lambda: len(load.since(0)) >= 50, 30), "the load did not start"

        # A broken target: version 1 keeps answering everywhere, and the failure shows on /models.
        moved_at = time.monotonic()
        run_cli(["models", "alias", "iris", "champion", "2"], env)

        def both_workers_saw_the_failure() -> bool:
            # Fresh connections land on either worker: ask until several in a row report it.
            answers = [httpx.get(base_url + "/models", timeout=10).json()["failed"] for _ in range(8)]
            return all(any(f["version"] == 2 for f in failed) for failed in answers)

        assert _wait_for(both_workers_saw_the_failure, 30), "the failed load of version 2 did not show"
        after_broken = load.since(moved_at)
        assert after_broken and set(after_broken) == {"1"}

        # A good target: every worker switches to version 3 within the refresh bound, nothing fails.
        moved_at = time.monotonic()
        run_cli(["models", "alias", "iris", "champion", "3"], env)
        assert _wait_for(lambda: load.since(moved_at)[-60:].count("3") == 60, 30), Counter(load.since(moved_at))
        assert set(load.since(moved_at)) <= {"1", "3"}
        # Once both workers have switched, none goes back.
        settled_at = time.monotonic()
        assert _wait_for(lambda: len(load.since(settled_at)) >= 50, 30)
        assert set(load.since(settled_at)) == {"3"}

    assert load.failures == [], load.failures[:5]
    assert len(load.versions) > 100
