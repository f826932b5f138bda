"""With GATEWAY_REDIS_URL set, an alias moved by another process reaches every worker at once
(the polling interval here is a minute, so polling cannot be what switched them)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import redis

from gateway.store.notify import CHANNEL
from tests.conftest import REDIS_URL, require_service
from tests.packages import PackageCache
from tests.servers import gateway_env, run_cli, run_gateway_process

BODY = {"inputs": [[5.1, 3.5, 1.4, 0.2]]}


def _subscribers() -> int:
    """How many Redis connections are subscribed to the registry-change channel right now."""
    with redis.Redis.from_url(REDIS_URL) as client:
        counts = client.pubsub_numsub(CHANNEL)
    return int(counts[0][1]) if counts else 0


def test_alias_move_reaches_every_worker_through_redis(packages: PackageCache, tmp_path: Path) -> None:
    require_service("Redis", "127.0.0.1", 6379)
    subscribed_before = _subscribers()
    env = gateway_env(
        f"sqlite:///{tmp_path}/store.db",
        packages.root,
        GATEWAY_REDIS_URL=REDIS_URL,
        GATEWAY_SERVING_REFRESH_INTERVAL_S="60",
    )
    run_cli(["models", "register", "notified", str(packages.get("onnx_classifier")), "--alias", "prod"], env)
    run_cli(["models", "register", "notified", str(packages.get("onnx_label_only"))], env)
    with run_gateway_process(["--model", "models:/notified@prod", "--workers", "2"], env, ready_path="/health") as (
        base_url,
        _,
    ):
        assert httpx.post(base_url + "/invocations", json=BODY).headers["x-model-version"] == "1"
        # Each worker subscribes in a background task once it is up: wait until both are listening.
        deadline = time.monotonic() + 20
        while _subscribers() < subscribed_before + 2:
            assert time.monotonic() < deadline, "the two workers did not both subscribe within 20 s"
            time.sleep(0.02)
        moved_at = time.monotonic()
        run_cli(["models", "alias", "notified", "prod", "2"], env)
        streak = 0
        deadline = moved_at + 20
        while streak < 40 and time.monotonic() < deadline:
            response = httpx.post(base_url + "/invocations", json=BODY, timeout=30)  # a new connection each
            assert response.status_code == 200, response.text
            streak = streak + 1 if response.headers["x-model-version"] == "2" else 0
        assert streak >= 40, "not every worker switched to version 2"
        # Far sooner than the 60 s poll (no timing asserted beyond that bound).
        assert time.monotonic() - moved_at < 20


def test_redis_down_falls_back_to_polling(packages: PackageCache, tmp_path: Path) -> None:
    env = gateway_env(
        f"sqlite:///{tmp_path}/store.db",
        packages.root,
        GATEWAY_REDIS_URL="redis://127.0.0.1:1/0",
        GATEWAY_SERVING_REFRESH_INTERVAL_S="0.2",
    )
    run_cli(["models", "register", "polled", str(packages.get("onnx_classifier")), "--alias", "prod"], env)
    run_cli(["models", "register", "polled", str(packages.get("onnx_label_only"))], env)
    with run_gateway_process(["--model", "models:/polled@prod", "--workers", "1"], env, ready_path="/health") as (
        base_url,
        _,
    ):
        result = run_cli(["models", "alias", "polled", "prod", "2"], env)
        assert "Redis" in result.stderr  # warned, and the alias was still moved
        deadline = time.monotonic() + 20
        version = "1"
        while version != "2" and time.monotonic() < deadline:
            version = httpx.post(base_url + "/invocations", json=BODY, timeout=30).headers["x-model-version"]
            time.sleep(0.05)
        assert version == "2"
