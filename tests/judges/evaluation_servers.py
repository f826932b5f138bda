"""Evaluation-run test helpers: a real gateway (create_app under uvicorn on loopback, a real SQLite store) whose
routes lead to the fake upstream, which answers judge requests in judge mode (loadtest/fake_upstream.py) and
other chat calls with ``"Echo: <last user text>"``; an HTTP client on it, and the store read back directly."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from gateway.config import load_settings
from gateway.store.assessments import Assessment, AssessmentStore
from gateway.store.engine import open_engine
from gateway.store.evaluations import EvaluationStore
from judges.evaluations import DEFAULT_LEASE, RunLease
from tests.llm.conftest import PROVIDER_KEY, PROVIDER_KEY_ENV, FakeUpstream, target
from tests.servers import run_app_in_thread

PRICES: dict[str, Any] = {"input_price_per_mtok": 2.0, "output_price_per_mtok": 8.0}
SLOW_JUDGE_MODEL = "fake-model@delay=0.4"
FINISHED = ("completed", "cancelled", "failed")


def evaluation_routes(up: FakeUpstream) -> dict[str, Any]:
    """The routes: ``judge`` (the built-ins' route, priced), ``chat`` (a target, priced, content captured),
    ``claude`` (an Anthropic Messages target, content captured),
    ``filtered`` (stored calls for the trace-filter tests), ``slow`` (each answer 0.4 s late)."""
    return {
        "routes": [
            {"name": "judge", "targets": [target(up, **PRICES)]},
            {"name": "chat", "capture_content": True, "targets": [target(up, **PRICES)]},
            {
                "name": "claude",
                "provider": "anthropic",
                "capture_content": True,
                "targets": [target(up, "claude-fake")],
            },
            {"name": "filtered", "capture_content": True, "targets": [target(up)]},
            {"name": "slow", "targets": [target(up, SLOW_JUDGE_MODEL)]},
        ]
    }


@dataclass
class EvalGateway:
    base_url: str
    client: httpx.Client
    store_uri: str
    assessments: AssessmentStore
    evaluations: EvaluationStore

    def post(self, body: dict[str, Any], status: int = 202) -> dict[str, Any]:
        answer = self.client.post("/api/evaluations", json=body)
        assert answer.status_code == status, answer.text
        data: dict[str, Any] = answer.json()
        return data

    def view(self, evaluation_id: str, *, items: bool = True) -> dict[str, Any]:
        answer = self.client.get(f"/api/evaluations/{evaluation_id}", params={} if items else {"items": "false"})
        assert answer.status_code == 200, answer.text
        data: dict[str, Any] = answer.json()
        return data

    def wait(
        self, evaluation_id: str, *, statuses: tuple[str, ...] = FINISHED, timeout_s: float = 60
    ) -> dict[str, Any]:
        """Poll the run until its status is one of ``statuses`` (bounded); its full view."""
        deadline = time.monotonic() + timeout_s
        while True:
            view = self.view(evaluation_id, items=False)
            if view["status"] in statuses:
                return self.view(evaluation_id)
            if time.monotonic() > deadline:
                raise AssertionError(f"evaluation {evaluation_id} still {view['status']} after {timeout_s} s: {view}")
            time.sleep(0.05)

    def stored(self, evaluation_id: str) -> list[Assessment]:
        return self.assessments.for_evaluation(evaluation_id)

    def create_judge(self, name: str, route: str = "slow") -> None:
        body = {"name": name, "instructions": "Is this answer fine? {{ outputs }}", "route": route,
                "value_kind": {"type": "bool"}}  # fmt: skip
        answer = self.client.post("/api/judges", json=body)
        assert answer.status_code == 201, answer.text

    def create_prompt(self, name: str, *templates: str) -> None:
        assert self.client.post("/api/prompts", json={"name": name}).status_code == 201
        for template in templates:
            answer = self.client.post(f"/api/prompts/{name}/versions", json={"template": template})
            assert answer.status_code == 201, answer.text


@contextmanager
def evaluation_gateway(
    store_dir: Path, up: FakeUpstream, judges: dict[str, Any] | None = None, *, lease: RunLease = DEFAULT_LEASE
) -> Iterator[EvalGateway]:
    """A real gateway on ``store_dir``'s SQLite store (several in turn on one directory: a restart; or at once:
    replicas), its evaluation runs' owner lease timed by ``lease``."""
    store_uri = f"sqlite:///{store_dir}/store.db"
    with pytest.MonkeyPatch.context() as env:
        env.setenv(PROVIDER_KEY_ENV, PROVIDER_KEY)
        env.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
        env.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
        env.delenv("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", raising=False)
        # The judge queue is the store's (no Redis), run by the gateway's embedded worker; short idle and claim
        # bounds, so that a restarted gateway reclaims the jobs the stopped one held within a second or two.
        queue = {"min_idle_s": 1.0, "reclaim_interval_s": 0.2, "claim_block_s": 0.2}
        sections = {"route": "judge", "concurrency": 4, "max_trace_items": 4, "queue": queue, **(judges or {})}
        settings = load_settings(
            {"store_uri": store_uri, "workers": 1, "llm": evaluation_routes(up), "judges": sections,
             "telemetry.summary_flush_interval_s": 0.05},
            environ={},
        )  # fmt: skip
        app = create_app(settings, evaluation_lease=lease)
        with run_app_in_thread(app) as base_url, httpx.Client(base_url=base_url, timeout=30) as client:
            engine = open_engine(store_uri)
            try:
                yield EvalGateway(base_url, client, store_uri, AssessmentStore(engine), EvaluationStore(engine))
            finally:
                engine.dispose()


def wait_for(condition: Any, *, timeout_s: float = 30, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout_s} s")
        time.sleep(0.05)
