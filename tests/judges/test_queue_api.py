"""``GET /api/judges/queue``, ``POST /api/judges/{name}/resume`` and the pause in ``GET /api/judges/{name}``, on
both queue backends (the store's table; Redis Streams), with ``judges.workers: external`` so the jobs stay put."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from judges.queue.base import JobQueue
from judges.queue.jobs import JudgeJob
from judges.queue.local import LocalJobQueue
from judges.queue.redis_streams import RedisStreamsQueue
from tests.conftest import REDIS_URL, require_service
from tests.judges.worker_procs import unique_prefix
from tests.llm.conftest import FakeUpstream, Gateway, running_gateway, target
from tests.llm.conftest import fake_upstream as fake_upstream  # noqa: F401 (a fixture, used by name)


@pytest.fixture(params=["store", "redis"])
def queued(
    request: pytest.FixtureRequest, fake_upstream: FakeUpstream, tmp_path: Path
) -> Iterator[tuple[Gateway, Any]]:  # noqa: F811
    """A gateway whose queue holds 3 safety jobs and 1 correctness job, safety paused (put there through
    another queue object on the same backend, as a worker process would); and the backend's name."""
    more: dict[str, Any] = {}
    prefix = unique_prefix()
    if request.param == "redis":
        require_service("Redis", "127.0.0.1", 6379)
        more["redis_url"] = REDIS_URL
    judges = {"route": "judge", "workers": "external", "queue": {"key_prefix": prefix}}
    llm = {"routes": [{"name": "judge", "targets": [target(fake_upstream)]}]}
    store_uri = f"sqlite:///{tmp_path}/store.db"

    def open_queue() -> JobQueue:
        if request.param == "redis":
            return RedisStreamsQueue(REDIS_URL, key_prefix=prefix)
        return LocalJobQueue.open(store_uri)

    async def fill() -> None:
        queue = open_queue()
        try:
            jobs = [JudgeJob("online", "safety", time.time() - 5, f"{i:032x}", f"{i:016x}") for i in range(3)]
            await queue.enqueue([*jobs, JudgeJob("online", "correctness", time.time(), "f" * 32, "f" * 16)])
            await queue.pause("safety", "HTTP 401 from route judge: check the target's API key")
        finally:
            await queue.close()

    with running_gateway(tmp_path, llm, judges=judges, **more) as gw:
        asyncio.run(fill())
        try:
            yield gw, request.param
        finally:
            if request.param == "redis":
                queue = RedisStreamsQueue(REDIS_URL, key_prefix=prefix)
                asyncio.run(_delete_all(queue))


async def _delete_all(queue: RedisStreamsQueue) -> None:
    try:
        await queue.delete_all()
    finally:
        await queue.close()


def test_the_queue_per_judge_its_pause_and_resume(queued: tuple[Gateway, str]) -> None:
    gw, backend = queued
    client = httpx.Client(base_url=gw.base_url)
    answer = client.get("/api/judges/queue")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["backend"] == backend
    by_judge = {entry["judge"]: entry for entry in body["judges"]}
    safety = by_judge["safety"]
    assert (safety["depth"], safety["pending"], safety["delayed"], safety["dead_letters"]) == (3, 0, 0, 0)
    assert safety["oldest_age_s"] >= 4.0 and safety["paused"].startswith("HTTP 401 from route judge")
    assert (by_judge["correctness"]["depth"], by_judge["correctness"]["paused"]) == (1, None)

    shown = client.get("/api/judges/safety").json()
    assert shown["paused"].startswith("HTTP 401") and shown["name"] == "safety"
    assert client.get("/api/judges/correctness").json()["paused"] is None

    resumed = client.post("/api/judges/safety/resume")
    assert resumed.status_code == 200 and resumed.json()["was_paused"].startswith("HTTP 401")
    assert client.get("/api/judges/safety").json()["paused"] is None
    again = client.post("/api/judges/safety/resume")  # idempotent
    assert again.status_code == 200 and again.json() == {"name": "safety", "was_paused": None}
    assert client.get("/api/judges/queue", params={"x": "1"}).status_code == 400


def test_metrics_show_the_shared_queue_once(queued: tuple[Gateway, str]) -> None:
    text = httpx.get(f"{queued[0].base_url}/metrics").text
    assert "gateway_judge_queue_up 1.0" in text
    assert 'gateway_judge_queue_depth{judge="safety"} 3.0' in text
    assert 'gateway_judge_queue_depth{judge="correctness"} 1.0' in text
    assert 'gateway_judge_queue_paused{judge="safety"} 1.0' in text
    assert 'gateway_judge_queue_paused{judge="correctness"} 0.0' in text
    oldest = next(
        line for line in text.splitlines() if line.startswith('gateway_judge_queue_oldest_age_seconds{judge="safety"}')
    )
    assert float(oldest.split()[-1]) >= 4.0
