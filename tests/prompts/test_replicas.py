"""Two gateway replicas on one store: an alias moved through one is served by the other within the
refresh interval, and at once (far inside a one-minute poll) when Redis pub/sub is configured."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from gateway.config import Settings
from tests.conftest import REDIS_URL, require_service
from tests.prompts.conftest import gateway_settings
from tests.servers import gateway_env, run_cli, run_gateway_in_thread

DEADLINE_S = 15.0  # a guard for the eventual condition, not a timing assertion


@contextlib.contextmanager
def _two_replicas(settings: Settings) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    """Two gateway apps (each with its own cache and refresher) on one store, and a client on each."""
    with contextlib.ExitStack() as stack:
        clients = [
            stack.enter_context(httpx.Client(base_url=stack.enter_context(run_gateway_in_thread(settings)), timeout=30))
            for _ in range(2)
        ]
        yield clients[0], clients[1]


def _setup(client: httpx.Client) -> None:
    for text in ("one {{ x }}", "two {{ x }}"):
        assert client.post("/api/prompts/qa/versions", json={"template": text}).status_code == 201
    assert client.put("/api/prompts/qa/aliases/prod", json={"version": 1}).status_code == 200


def _wait_for_version(client: httpx.Client, path: str, version: int) -> int:
    deadline = time.monotonic() + DEADLINE_S
    seen = -1
    while time.monotonic() < deadline:
        response = client.get(path)
        seen = response.json()["version"] if response.status_code == 200 else -response.status_code
        if seen == version:
            break
        time.sleep(0.05)
    return seen


def test_alias_move_reaches_a_second_replica_by_polling(store_url: str) -> None:
    settings = gateway_settings(store_url, **{"serving.refresh_interval_s": 0.3})
    with _two_replicas(settings) as (a, b):
        _setup(a)
        assert _wait_for_version(b, "/api/prompts/qa@prod", 1) == 1
        assert a.put("/api/prompts/qa/aliases/prod", json={"version": 2}).status_code == 200
        assert a.get("/api/prompts/qa@prod").json()["version"] == 2  # the writer sees it at once
        assert _wait_for_version(b, "/api/prompts/qa@prod", 2) == 2
        assert b.post("/api/prompts/qa@prod/render", json={"variables": {"x": "!"}}).json()["text"] == "two !"


def test_alias_move_reaches_a_second_replica_at_once_through_redis(tmp_path: Path) -> None:
    require_service("Redis", "127.0.0.1", 6379)
    store_url = f"sqlite:///{tmp_path}/store.db"
    # Polling every minute: within DEADLINE_S only a Redis notification can have moved the alias.
    settings = gateway_settings(store_url, redis_url=REDIS_URL, **{"serving.refresh_interval_s": 60})
    with _two_replicas(settings) as (a, b):
        _setup(a)
        assert _wait_for_version(b, "/api/prompts/qa@prod", 1) == 1
        assert a.put("/api/prompts/qa/aliases/prod", json={"version": 2}).status_code == 200
        assert _wait_for_version(b, "/api/prompts/qa@prod", 2) == 2
        # The command line publishes its changes too.
        env = gateway_env(store_url, tmp_path, GATEWAY_REDIS_URL=REDIS_URL)
        run_cli(["prompts", "alias", "qa", "prod", "1"], env)
        assert _wait_for_version(a, "/api/prompts/qa@prod", 1) == 1
        assert _wait_for_version(b, "/api/prompts/qa@prod", 1) == 1
