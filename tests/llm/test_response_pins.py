"""Which target created a response, shared between gateway processes: in Redis (``redis_url``: replicas) or in
a SQLite file in the shared directory of one server's workers. Two gateway apps on one configuration stand in
for two replicas (or two workers): a response created through one is continued, read and deleted through the
other, at the target that created it."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from gateway.app import create_app
from gateway.config import load_settings
from gateway.llm.response_pins import REDIS_PREFIX, SQLITE_FILE
from gateway.metrics import METRICS_DIR_ENV
from tests.conftest import REDIS_URL, require_service
from tests.llm.conftest import PROVIDER_KEY, PROVIDER_KEY_ENV, FakeUpstream, target
from tests.servers import free_port, run_app_in_thread


@contextlib.contextmanager
def _gateways(tmp_path: Path, upstream: FakeUpstream, **settings: Any) -> Iterator[tuple[str, str]]:
    """Two gateways on one store and one configuration (a route to the fake upstream)."""
    llm = {"routes": [{"name": "gpt-4o-mini", "targets": [target(upstream)]}]}
    config = {"store_uri": f"sqlite:///{tmp_path}/store.db", "workers": 1, "llm": llm, **settings}
    with pytest.MonkeyPatch.context() as env:
        env.setenv(PROVIDER_KEY_ENV, PROVIDER_KEY)
        first = create_app(load_settings(config, environ={}))
        second = create_app(load_settings(config, environ={}))
        with run_app_in_thread(first) as one, run_app_in_thread(second) as two:
            yield one, two


def _create(base_url: str) -> str:
    answer = httpx.post(base_url + "/v1/responses", json={"model": "gpt-4o-mini", "input": "Hi"}, timeout=30)
    assert answer.status_code == 200, answer.text
    response_id: str = answer.json()["id"]
    return response_id


def _continued_elsewhere(one: str, two: str, upstream: FakeUpstream) -> str:
    response_id = _create(one)
    body = {"model": "gpt-4o-mini", "input": "And?", "previous_response_id": response_id}
    continued = httpx.post(two + "/v1/responses", json=body, timeout=30)
    assert continued.status_code == 200 and continued.json()["previous_response_id"] == response_id
    retrieved = httpx.get(f"{two}/v1/responses/{response_id}", timeout=30)
    assert retrieved.status_code == 200 and retrieved.json()["id"] == response_id
    assert httpx.delete(f"{two}/v1/responses/{response_id}", timeout=30).status_code == 200
    assert [r.method for r in upstream.recorder.requests] == ["POST", "POST", "GET", "DELETE"]
    return response_id


def test_replicas_share_pins_through_redis(tmp_path: Path, upstream: FakeUpstream) -> None:
    require_service("Redis", "127.0.0.1", 6379)
    client = redis.Redis.from_url(REDIS_URL)
    with _gateways(tmp_path, upstream, redis_url=REDIS_URL) as (one, two):
        response_id = _create(one)
        assert client.ttl(REDIS_PREFIX + response_id) > 29 * 24 * 3600  # a stored response's 30 days
        upstream.recorder.reset()
        gone = _continued_elsewhere(one, two, upstream)
        assert client.get(REDIS_PREFIX + gone) is None  # deleted with the response
    client.delete(REDIS_PREFIX + response_id)
    client.close()


def test_workers_share_pins_through_a_file(tmp_path: Path, upstream: FakeUpstream) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    with pytest.MonkeyPatch.context() as env:
        env.setenv(METRICS_DIR_ENV, str(shared))  # what gateway serve sets for its workers
        with _gateways(tmp_path, upstream) as (one, two):
            _continued_elsewhere(one, two, upstream)
    assert (shared / SQLITE_FILE).exists()


def test_redis_down_keeps_pins_in_memory_and_a_lookup_elsewhere_is_a_503(
    tmp_path: Path, upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.llm")
    down = f"redis://127.0.0.1:{free_port()}/0"
    with _gateways(tmp_path, upstream, redis_url=down) as (one, two):
        response_id = _create(one)
        assert httpx.get(f"{one}/v1/responses/{response_id}", timeout=30).status_code == 200  # this one knows
        elsewhere = httpx.get(f"{two}/v1/responses/{response_id}", timeout=30)
    assert elsewhere.status_code == 503 and elsewhere.headers["retry-after"] == "1"
    error = elsewhere.json()["error"]
    assert error["code"] == "pins_unavailable" and "Redis is unavailable" in error["message"]
    assert "Could not write response pins to Redis" in caplog.text
