"""Online judging end to end, in one real gateway: a client's LLM call is sampled by ``judges.online`` (rate 1),
its job goes through the gateway's own judge queue to the gateway's embedded worker, which calls the judge
and writes the assessment on the call's trace (``GET /api/traces/{trace_id}``). For an OpenAI chat call and
an Anthropic ``/v1/messages`` call (the judged inputs and outputs read from that format's stored content),
on each queue backend: the store's (no Redis) and Redis Streams (under the test's own key prefix).

The fake upstream is both the judged route's provider and the judge; a ``[[verdict.safety=false]]`` marker in
the client's question scripts the judge's verdict, so a ``false`` assessment shows the judge was given the
call's content."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from gateway.config import load_settings
from judges.queue.local import LocalJobQueue
from tests.conftest import REDIS_URL
from tests.judges.worker_procs import FAST_QUEUE, redis_prefix, run
from tests.llm.conftest import PROVIDER_KEY, PROVIDER_KEY_ENV, FakeUpstream, target, wait_until
from tests.servers import run_app_in_thread

redis_prefix = redis_prefix  # a fixture, used by name (through request.getfixturevalue)

QUESTION = "Which planet is largest? [[verdict.safety=false]]"
CALLS: dict[str, tuple[str, dict[str, Any]]] = {
    "chat": ("/v1/chat/completions", {"model": "chat", "messages": [{"role": "user", "content": QUESTION}]}),
    "anthropic": (
        "/v1/messages",
        {"model": "claude", "max_tokens": 64, "messages": [{"role": "user", "content": QUESTION}]},
    ),
}


@contextmanager
def judged_gateway(tmp_path: Path, up: FakeUpstream, redis_prefix: str | None) -> Iterator[httpx.Client]:
    """A gateway whose routes ``chat`` (OpenAI) and ``claude`` (Anthropic) are judged by ``safety`` at rate 1,
    the judge on route ``judge``; the default embedded worker; the queue on Redis under ``redis_prefix``, or
    the store's when None."""
    online = [{"route": route, "judges": [{"name": "safety", "rate": 1}]} for route in ("chat", "claude")]
    judges = {
        "route": "judge",
        "online": online,
        "online_flush_interval_s": 0.05,
        "queue": {**FAST_QUEUE, **({"key_prefix": redis_prefix} if redis_prefix else {})},
    }
    llm = {
        "routes": [
            {"name": "judge", "targets": [target(up)]},
            {"name": "chat", "capture_content": True, "targets": [target(up)]},
            {
                "name": "claude",
                "provider": "anthropic",
                "capture_content": True,
                "targets": [target(up, "claude-fake")],
            },
        ]
    }
    with pytest.MonkeyPatch.context() as env:
        env.setenv(PROVIDER_KEY_ENV, PROVIDER_KEY)
        for name in (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
        ):
            env.delenv(name, raising=False)
        settings = load_settings(
            {"store_uri": f"sqlite:///{tmp_path}/store.db", "workers": 1, "llm": llm, "judges": judges,
             "telemetry.summary_flush_interval_s": 0.05, **({"redis_url": REDIS_URL} if redis_prefix else {})},
            environ={},
        )  # fmt: skip
        with run_app_in_thread(create_app(settings)) as base_url, httpx.Client(base_url=base_url, timeout=30) as client:
            yield client


def _queue_depth(tmp_path: Path, redis_prefix: str | None) -> int:
    """Jobs not done in the gateway's queue, read through a queue of the test's own on the same backend."""
    if redis_prefix is not None:

        async def redis_depth(queue: Any) -> int:
            return sum(s.depth for s in await queue.stats())

        return run(redis_depth, redis_prefix)

    async def store_depth() -> int:
        queue = LocalJobQueue.open(f"sqlite:///{tmp_path}/store.db")
        try:
            return sum(s.depth for s in await queue.stats())
        finally:
            await queue.close()

    return asyncio.run(store_depth())


@pytest.mark.parametrize("backend", ["store", "redis"])
def test_a_client_call_is_judged_once_by_the_gateways_own_worker(
    tmp_path: Path, upstream: FakeUpstream, backend: str, request: pytest.FixtureRequest
) -> None:
    redis_prefix: str | None = request.getfixturevalue("redis_prefix") if backend == "redis" else None
    with judged_gateway(tmp_path, upstream, redis_prefix) as client:
        trace_ids = {}
        for kind, (path, body) in CALLS.items():
            trace_id = secrets.token_hex(16)
            answer = client.post(path, json=body, headers={"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"})
            assert answer.status_code == 200, answer.text
            trace_ids[kind] = trace_id
        for kind, trace_id in trace_ids.items():

            def assessed(t: str = trace_id) -> list[dict[str, Any]]:
                answer = client.get(f"/api/traces/{t}")
                found: list[dict[str, Any]] = answer.json()["assessments"] if answer.status_code == 200 else []
                return found

            wait_until(assessed, timeout_s=30, what=f"the {kind} call's assessment")
            wait_until(lambda: _queue_depth(tmp_path, redis_prefix) == 0, timeout_s=30, what="an empty queue")
            (assessment,) = assessed()  # exactly one, with every job done
            assert (assessment["name"], assessment["value"], assessment["error_code"]) == ("safety", False, None), (
                kind,
                assessment,
            )
            assert assessment["span_id"] is not None and assessment["judge_trace_id"] not in trace_ids.values()
    # The judge was given the calls' content, read from each format's stored messages.
    judge_bodies = [
        received.body.decode()
        for received in upstream.recorder.requests
        if b'"judge_' in received.body and received.path.endswith("/chat/completions")
    ]
    assert len(judge_bodies) == 2 and all("Which planet is largest?" in body for body in judge_bodies), judge_bodies
