"""Judge fixtures: a real gateway (create_app under uvicorn on loopback, real SQLite store) whose LLM routes
lead to the fake upstream in judge mode (loadtest/fake_upstream.py), and a way to run judges as a job does.

The gateway's own proxy and runner live on the server thread's event loop, so each test drives a
``JudgeRunner`` of its own on its own loop, over an ``LlmProxy`` built from the gateway's routes, prompt
renderer and TracerProvider (as tests/llm/test_complete.py does) and the gateway's assessment store: the
calls reach the same upstream, spans, trace store and assessments table. Judges come from the gateway's
catalog (``app.state.judges``), custom ones created through ``POST /api/judges``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway.app import create_app
from gateway.config import load_settings
from gateway.judge_settings import JudgesSettings
from gateway.llm.proxy import LlmProxy
from gateway.llm.routes_config import AuthSettings
from gateway.store.assessments import Assessment, AssessmentStore
from gateway.telemetry.events import EvaluationEvents
from judges.api import JudgesState
from judges.definitions import Judge
from judges.runner import JudgeRunner, Target
from tests.llm.conftest import PROVIDER_KEY, PROVIDER_KEY_ENV, FakeUpstream, Gateway, target, wait_until
from tests.llm.conftest import fake_upstream as fake_upstream  # noqa: F401 (a fixture, used by name)
from tests.llm.conftest import upstream as upstream  # noqa: F401 (a fixture, used by name)
from tests.servers import run_app_in_thread

T = TypeVar("T")
FAST = {"backoff_initial_s": 0.01, "backoff_max_s": 0.05}
PRICES: dict[str, Any] = {"input_price_per_mtok": 2.0, "output_price_per_mtok": 8.0}
FORMATS = ("fenced", "preamble", "yes_word", "digit_string", "out_of_range", "no_json", "wrong_type")


def judge_routes(up: FakeUpstream) -> list[dict[str, Any]]:
    """Every route the judge tests use; each names what its target does."""
    routes: list[dict[str, Any]] = [
        {"name": "judge", "targets": [target(up, **PRICES)]},
        {"name": "flaky", "retries": 1, **FAST, "targets": [target(up, "fake-model@fail_first=1,status=500")]},
        {
            "name": "rate-limited",
            "retries": 1,
            **FAST,
            "targets": [target(up, "fake-model@fail_first=1,status=429,retry_after=2")],
        },
        {"name": "hanging", "retries": 0, "targets": [target(up, "fake-model@delay=60")]},
        {"name": "repaired", "targets": [target(up, "fake-model@judge_format=out_of_range,judge_format_first=1")]},
    ]
    routes += [{"name": f"fmt-{fmt}", "targets": [target(up, f"fake-model@judge_format={fmt}")]} for fmt in FORMATS]
    return routes


@dataclass
class JudgeGateway(Gateway):
    client: httpx.Client

    @property
    def judges(self) -> JudgesState:
        state: JudgesState = self.app.state.judges
        return state

    @property
    def assessments(self) -> AssessmentStore:
        store: AssessmentStore = self.app.state.assessments
        return store

    def judge(self, name: str) -> Judge:
        return self.judges.catalog.get(name)

    def create_judge(self, name: str, instructions: str, value_kind: Mapping[str, Any], route: str = "judge") -> Judge:
        body = {"name": name, "instructions": instructions, "route": route, "value_kind": dict(value_kind)}
        answer = self.client.post("/api/judges", json=body)
        assert answer.status_code == 201, answer.text
        return self.judge(name)

    def run(self, work: Callable[[JudgeRunner], Awaitable[T]], settings: JudgesSettings | None = None,
            events: EvaluationEvents | None = None) -> T:  # fmt: skip
        """``work(runner)`` on a fresh event loop, with a runner over the gateway's routes and store
        (``settings``: the gateway's judges section by default); bounded by 60 s."""
        app_proxy: LlmProxy = self.app.state.llm_proxy
        chosen = settings or self.judges.runner.settings

        async def main() -> T:
            proxy = LlmProxy(app_proxy.settings, AuthSettings(), self.app.state.tracer_provider, app_proxy.renderer)
            await proxy.start()
            try:
                return await asyncio.wait_for(work(JudgeRunner(proxy, chosen, self.assessments, events)), 60)
            finally:
                await proxy.close()

        return asyncio.run(main())

    def run_one(self, judge: Judge, item: Mapping[str, Any], target: Target, evaluation_id: str | None = None,
                settings: JudgesSettings | None = None) -> Assessment:  # fmt: skip
        return self.run(lambda runner: runner.run(judge, item, target=target, evaluation_id=evaluation_id), settings)

    def run_many(self, jobs: Sequence[tuple[Judge, Mapping[str, Any], Target, str | None]],
                 settings: JudgesSettings | None = None) -> list[Assessment]:  # fmt: skip
        async def work(runner: JudgeRunner) -> list[Assessment]:
            calls = (runner.run(j, item, target=t, evaluation_id=e) for j, item, t, e in jobs)
            return list(await asyncio.gather(*calls))

        return self.run(work, settings)


@contextmanager
def judging_gateway(tmp_path: Path, llm: dict[str, Any], judges: dict[str, Any]) -> Iterator[JudgeGateway]:
    """A real gateway with these llm and judges sections, its spans kept in memory."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv(PROVIDER_KEY_ENV, PROVIDER_KEY)
        env.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
        env.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
        settings = load_settings(
            {"store_uri": f"sqlite:///{tmp_path}/store.db", "workers": 1, "llm": llm, "judges": judges}, environ={}
        )
        app = create_app(settings)
        with run_app_in_thread(app) as base_url, httpx.Client(base_url=base_url, timeout=30) as client:
            provider: TracerProvider = app.state.tracer_provider
            exporter = InMemorySpanExporter()
            provider.add_span_processor(SimpleSpanProcessor(exporter))
            yield JudgeGateway(base_url, app, exporter, client)


@pytest.fixture(scope="module")
def judge_gateway(fake_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[JudgeGateway]:  # noqa: F811
    with judging_gateway(
        tmp_path_factory.mktemp("judges"), {"routes": judge_routes(fake_upstream)}, {"route": "judge"}
    ) as gw:
        yield gw


@pytest.fixture
def gw(judge_gateway: JudgeGateway, upstream: FakeUpstream) -> JudgeGateway:  # noqa: F811
    """The module's gateway, its spans and the fake upstream's records cleared for this test."""
    judge_gateway.exporter.clear()
    return judge_gateway


__all__ = ["FakeUpstream", "JudgeGateway", "wait_until"]
