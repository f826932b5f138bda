"""Online judges in a real gateway (create_app under uvicorn, the fake upstream as provider and judge):
a client's call becomes a judge job in the queue after its answer; truncated captures, judge calls and a
stalled Redis; ``GET`` / ``PUT /api/judges/online``.

The queue is the gateway's own: the store's (judges/queue/local.py) on the test's SQLite file, with
``judges.workers: external`` so that no worker in the gateway takes the jobs; the test reads them back by
claiming them as a probe consumer. The stalled-Redis test points ``redis_url`` at a server that accepts and
never answers (the gateway's queue is then Redis Streams on it)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlalchemy.engine import Engine

from gateway.app import create_app
from gateway.config import load_settings
from gateway.store.engine import open_engine
from gateway.telemetry import semconv as sc
from judges.online import metrics
from judges.queue.jobs import JudgeJob
from judges.queue.local import LocalJobQueue
from judges.runner import Target
from tests.judges.conftest import JudgeGateway
from tests.judges.worker_procs import StalledServer
from tests.llm.conftest import PROVIDER_KEY, PROVIDER_KEY_ENV, FakeUpstream, target, wait_until
from tests.servers import run_app_in_thread

ALWAYS = [{"name": "safety", "rate": 1}]


def _llm(up: FakeUpstream) -> dict[str, Any]:
    return {
        "routes": [
            {"name": "chat", "capture_content": True, "targets": [target(up)]},
            {"name": "small", "capture_content": True, "capture_max_chars": 400, "targets": [target(up)]},
            {"name": "quiet", "targets": [target(up)]},
        ]
    }


def _judges(online: list[dict[str, Any]]) -> dict[str, Any]:
    return {"route": "chat", "online": online, "online_flush_interval_s": 0.01, "online_enqueue_timeout_s": 0.1}


@dataclass
class OnlineGateway(JudgeGateway):
    store_uri: str
    seen: list[JudgeJob] = field(default_factory=list)  # the jobs the probe took from the queue so far

    def chat(self, route: str = "chat", text: str = "What is 2 + 2?") -> httpx.Response:
        body = {"model": route, "messages": [{"role": "user", "content": text}]}
        answer = self.client.post("/v1/chat/completions", json=body)
        assert answer.status_code == 200, answer.text
        return answer

    def server_span(self, route: str) -> ReadableSpan:
        """The latest SERVER span of a call on ``route`` (waiting for it)."""

        def found() -> ReadableSpan | None:
            spans = [
                span
                for span in self.exporter.get_finished_spans()
                if span.kind is SpanKind.SERVER and (span.attributes or {}).get(sc.GATEWAY_LLM_ROUTE) == route
            ]
            return spans[-1] if spans else None

        span: ReadableSpan = wait_until(found, what=f"the SERVER span of a call on {route}")
        return span

    def queued(self) -> list[JudgeJob]:
        """Every job that reached the gateway's queue so far: those not seen yet are claimed by a probe
        consumer (on the store's queue, read through an engine of the test's own), oldest first."""

        async def take(engine: Engine) -> list[JudgeJob]:
            return [delivery.job for delivery in await LocalJobQueue(engine).claim("probe", 1000, 0)]

        engine = open_engine(self.store_uri)
        try:
            self.seen.extend(asyncio.run(take(engine)))
        finally:
            engine.dispose()
        return list(self.seen)

    def jobs_of(self, trace_id: str) -> list[JudgeJob]:
        return [job for job in self.queued() if job.trace_id == trace_id]


@contextmanager
def online_gateway(
    tmp_path: Path, up: FakeUpstream, online: list[dict[str, Any]], *, workers: str = "external", **more: Any
) -> Iterator[OnlineGateway]:
    """A real gateway with these online rules; its judge workers ``external`` (none in the gateway: the jobs
    stay queued for the test to read) unless told; ``more`` settings (``redis_url``)."""
    store_uri = f"sqlite:///{tmp_path}/store.db"
    with pytest.MonkeyPatch.context() as env:
        env.setenv(PROVIDER_KEY_ENV, PROVIDER_KEY)
        env.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
        env.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
        judges = {**_judges(online), "workers": workers}
        settings = load_settings(
            {"store_uri": store_uri, "workers": 1, "llm": _llm(up), "judges": judges, **more}, environ={}
        )
        app = create_app(settings)
        with run_app_in_thread(app) as base_url, httpx.Client(base_url=base_url, timeout=30) as client:
            provider: TracerProvider = app.state.tracer_provider
            exporter = InMemorySpanExporter()
            provider.add_span_processor(SimpleSpanProcessor(exporter))
            yield OnlineGateway(base_url, app, exporter, client, store_uri)


@pytest.fixture(scope="module")
def online_gw(fake_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OnlineGateway]:
    rules = [{"route": "chat", "judges": ALWAYS}, {"route": "small", "judges": ALWAYS}]
    with online_gateway(tmp_path_factory.mktemp("online"), fake_upstream, rules) as gw:
        yield gw


@pytest.fixture
def gw(online_gw: OnlineGateway, upstream: FakeUpstream) -> Iterator[OnlineGateway]:
    online_gw.exporter.clear()
    rules = online_gw.app.state.online_judges.running.rules
    configured = rules.current.rules
    yield online_gw
    rules.replace(configured)  # a PUT in the test changed them


def test_a_client_call_becomes_a_job_after_its_answer(gw: OnlineGateway) -> None:
    before = metrics.JOBS_ENQUEUED.get(("safety",))
    gw.chat()
    span = gw.server_span("chat")
    trace_id, span_id = format(span.context.trace_id, "032x"), format(span.context.span_id, "016x")
    jobs = wait_until(lambda: gw.jobs_of(trace_id), what="the call's judge job")
    assert [(job.kind, job.judge, job.span_id) for job in jobs] == [("online", "safety", span_id)]
    assert metrics.JOBS_ENQUEUED.get(("safety",)) - before >= 1
    # The job's target is the stored call a worker will read (trace summary of that trace and span).
    stored = wait_until(
        lambda: (answer := gw.client.get(f"/api/traces/{trace_id}")).status_code == 200 and answer.json(),
        what="the stored trace",
    )
    assert [summary["span_id"] for summary in stored["summaries"]] == [span_id]


def test_a_truncated_capture_is_skipped_and_counted(gw: OnlineGateway) -> None:
    before = metrics.JOBS_DROPPED.get((metrics.CONTENT_TRUNCATED,))
    gw.chat("small", "A question long enough to be cut at 400 characters. " * 10)
    span = gw.server_span("small")
    assert (span.attributes or {}).get(sc.GATEWAY_LLM_CONTENT_TRUNCATED) is True
    wait_until(lambda: metrics.JOBS_DROPPED.get((metrics.CONTENT_TRUNCATED,)) - before == 1, what="the count")
    gw.chat()  # a later call's job arrives: had the truncated call made one, it would be there by now
    later = gw.server_span("chat")
    wait_until(lambda: gw.jobs_of(format(later.context.trace_id, "032x")), what="the later call's job")
    assert gw.jobs_of(format(span.context.trace_id, "032x")) == []


def test_a_short_capture_is_not_marked_truncated(gw: OnlineGateway) -> None:
    gw.chat("small", "Hi")
    span = gw.server_span("small")
    assert sc.GATEWAY_LLM_CONTENT_TRUNCATED not in (span.attributes or {})
    wait_until(lambda: gw.jobs_of(format(span.context.trace_id, "032x")), what="the call's job")


def test_a_judge_call_is_never_judged_even_on_a_route_with_online_judges(gw: OnlineGateway) -> None:
    """The judge runs on route chat, which has online judges at rate 1: its own call makes no job."""
    gw.chat()
    client_span = gw.server_span("chat")
    client_trace = format(client_span.context.trace_id, "032x")
    assessment = gw.run_one(
        gw.judge("safety"),
        {"inputs": {"question": "2 + 2?"}, "outputs": "4"},
        Target(trace_id=client_trace, span_id=format(client_span.context.span_id, "016x")),
    )
    assert assessment.error_code is None, assessment.error_message
    judge_spans = [s for s in gw.exporter.get_finished_spans() if sc.GATEWAY_JUDGE_NAME in (s.attributes or {})]
    assert judge_spans and all((s.attributes or {})[sc.GATEWAY_LLM_ROUTE] == "chat" for s in judge_spans)
    gw.chat()  # a later client call's job arrives after anything the judge call could have made
    later = gw.server_span("chat")
    wait_until(lambda: gw.jobs_of(format(later.context.trace_id, "032x")), what="the later call's job")
    judge_traces = {format(s.context.trace_id, "032x") for s in judge_spans}
    assert [job for job in gw.queued() if job.trace_id in judge_traces] == []


def test_a_stalled_redis_never_delays_the_client(fake_upstream: FakeUpstream, tmp_path: Path) -> None:
    """Online judges at 100% and Redis stalled (redis_url on a server that accepts and never answers: the
    judge queue, the embedded worker, notifications, key limits and response pins all on it): the gateway
    starts, every client call is answered as usual, and the jobs are dropped and counted once the enqueue
    timeout passes (twice)."""
    before = metrics.JOBS_DROPPED.get((metrics.QUEUE_UNAVAILABLE,))
    rules = [{"route": "chat", "judges": ALWAYS}]
    with (
        StalledServer() as stalled,
        online_gateway(tmp_path, fake_upstream, rules, workers="embedded", redis_url=stalled.url) as gw,
    ):
        for index in range(5):
            answer = gw.chat(text=f"Question {index}?")  # asserts 200
            assert answer.json()["choices"][0]["message"]["content"] == f"Echo: Question {index}?"
        wait_until(
            lambda: metrics.JOBS_DROPPED.get((metrics.QUEUE_UNAVAILABLE,)) > before,
            what="jobs dropped by the stall",
        )
        assert stalled.accepted >= 1  # the gateway did reach the stalled server
        assert gw.client.get("/api/judges/online").status_code == 200
        gw.chat()  # still answered after the drops


def test_get_shows_the_rules_in_force(gw: OnlineGateway) -> None:
    answer = gw.client.get("/api/judges/online")
    assert answer.status_code == 200
    body = answer.json()
    assert body["running"] is True and isinstance(body["buffered"], int)
    assert body["rules"] == [{"route": "chat", "judges": [{"name": "safety", "rate": 1.0}]},
                             {"route": "small", "judges": [{"name": "safety", "rate": 1.0}]}]  # fmt: skip
    assert gw.client.get("/api/judges/online?x=1").status_code == 400
    assert gw.client.get("/api/judges/safety").json()["name"] == "safety"  # {name} still routes


def test_put_replaces_the_rules_for_the_next_calls(gw: OnlineGateway) -> None:
    rules = [{"route": "chat", "operation": "chat", "judges": [{"name": "relevance_to_query", "rate": 1}]}]
    answer = gw.client.put("/api/judges/online", json={"rules": rules})
    assert answer.status_code == 200, answer.text
    assert answer.json()["rules"] == [{**rules[0], "judges": [{"name": "relevance_to_query", "rate": 1.0}]}]
    assert gw.client.get("/api/judges/online").json()["rules"] == answer.json()["rules"]
    gw.chat()
    span = gw.server_span("chat")
    jobs = wait_until(lambda: gw.jobs_of(format(span.context.trace_id, "032x")), what="the job")
    assert [job.judge for job in jobs] == ["relevance_to_query"]
    assert gw.client.put("/api/judges/online", json={"rules": []}).json()["rules"] == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"rules": [{"route": "chat", "judges": [{"name": "safety", "rate": 2}]}]},
         "rules[0].judges[0].rate: 2 must be a number between 0 and 1."),
        ({"rules": [{"route": "quiet", "judges": ALWAYS}]},
         "rules[0].route: route 'quiet' has online judges but does not capture content"),
        ({"rules": [{"route": "nope", "judges": ALWAYS}]}, "rules[0].route: 'nope' is not an LLM route"),
        ({"rules": [{"route": "chat", "judges": ALWAYS},
                    {"route": "chat", "judges": [{"name": "missing", "rate": 1}]}]},
         "rules[1].judges[0].name: No judge 'missing'"),
        ({"rules": [{"route": "chat", "judges": [{"name": "guidelines", "rate": 1}]}]}, "rules[0].judges[0].name: "),
        ({"rules": {"route": "chat"}}, "rules: expected a list of rules, got dict."),
        ({"rule": []}, "Unknown field(s) rule; expected 'rules'."),
        ({}, "Field 'rules' is required"),
    ],
)  # fmt: skip
def test_put_refuses_a_bad_body_naming_the_field(gw: OnlineGateway, body: dict[str, Any], message: str) -> None:
    answer = gw.client.put("/api/judges/online", json=body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert message in answer.json()["message"]
    assert gw.client.get("/api/judges/online").json()["rules"][0]["route"] == "chat"  # unchanged


def test_put_on_a_gateway_started_without_rules_starts_judging(fake_upstream: FakeUpstream, tmp_path: Path) -> None:
    with online_gateway(tmp_path, fake_upstream, []) as gw:
        assert gw.client.get("/api/judges/online").json() == {"rules": [], "running": False, "buffered": 0}
        gw.chat()  # no rules: nothing sampled
        unjudged = gw.server_span("chat")
        answer = gw.client.put("/api/judges/online", json={"rules": [{"route": "chat", "judges": ALWAYS}]})
        assert answer.status_code == 200, answer.text
        assert answer.json()["running"] is True
        gw.exporter.clear()
        gw.chat()
        judged = gw.server_span("chat")
        jobs = wait_until(lambda: gw.jobs_of(format(judged.context.trace_id, "032x")), what="the job")
        assert [job.judge for job in jobs] == ["safety"]
        assert gw.jobs_of(format(unjudged.context.trace_id, "032x")) == []  # it would have arrived first
