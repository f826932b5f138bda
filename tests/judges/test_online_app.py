"""Online judges in a real gateway (create_app under uvicorn, the fake upstream as provider and judge):
a client's call becomes a judge job in the queue after its answer; truncated captures, judge calls and a
stalled queue; ``GET`` / ``PUT /api/judges/online``.

The queue is tests/judges/memory_queue.py handed to ``create_app(judge_queue=...)``, a stand-in for the
backends until they are merged (``judges.online.queue_choice.queue_for`` then picks one)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from gateway.app import create_app
from gateway.config import ConfigError, load_settings
from gateway.telemetry import semconv as sc
from judges.online import metrics
from judges.runner import Target
from tests.judges.conftest import JudgeGateway
from tests.judges.memory_queue import MemoryQueue
from tests.llm.conftest import PROVIDER_KEY, PROVIDER_KEY_ENV, FakeUpstream, target, wait_until
from tests.servers import GATEWAY_BIN, free_port, run_app_in_thread

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
    queue: MemoryQueue

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

    def jobs_of(self, trace_id: str) -> list[Any]:
        return [job for job in self.queue.snapshot() if job.trace_id == trace_id]


@contextmanager
def online_gateway(tmp_path: Path, up: FakeUpstream, online: list[dict[str, Any]]) -> Iterator[OnlineGateway]:
    queue = MemoryQueue()
    with pytest.MonkeyPatch.context() as env:
        env.setenv(PROVIDER_KEY_ENV, PROVIDER_KEY)
        env.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
        env.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
        settings = load_settings(
            {"store_uri": f"sqlite:///{tmp_path}/store.db", "workers": 1, "llm": _llm(up), "judges": _judges(online)},
            environ={},
        )
        app = create_app(settings, judge_queue=queue)
        with run_app_in_thread(app) as base_url, httpx.Client(base_url=base_url, timeout=30) as client:
            provider: TracerProvider = app.state.tracer_provider
            exporter = InMemorySpanExporter()
            provider.add_span_processor(SimpleSpanProcessor(exporter))
            yield OnlineGateway(base_url, app, exporter, client, queue)
    assert not queue.closed  # the caller's queue: the app leaves it open


@pytest.fixture(scope="module")
def online_gw(fake_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OnlineGateway]:
    rules = [{"route": "chat", "judges": ALWAYS}, {"route": "small", "judges": ALWAYS}]
    with online_gateway(tmp_path_factory.mktemp("online"), fake_upstream, rules) as gw:
        yield gw


@pytest.fixture
def gw(online_gw: OnlineGateway, upstream: FakeUpstream) -> Iterator[OnlineGateway]:
    online_gw.exporter.clear()
    online_gw.queue.stalled.clear()
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
    assert [job for job in gw.queue.snapshot() if job.trace_id in judge_traces] == []


def test_a_stalled_queue_never_delays_the_client(gw: OnlineGateway) -> None:
    """The queue accepts nothing and never answers: every client call is answered as usual, and the
    jobs are dropped and counted once the enqueue timeout passes (twice)."""
    before = metrics.JOBS_DROPPED.get((metrics.QUEUE_UNAVAILABLE,))
    gw.queue.stalled.set()
    for _ in range(5):
        gw.chat()  # asserts 200
    wait_until(
        lambda: metrics.JOBS_DROPPED.get((metrics.QUEUE_UNAVAILABLE,)) > before, what="jobs dropped by the stall"
    )
    gw.queue.stalled.clear()
    gw.chat()
    later = gw.server_span("chat")
    wait_until(lambda: gw.jobs_of(format(later.context.trace_id, "032x")), what="a job once the queue answers")


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


def test_without_rules_online_judging_is_off(fake_upstream: FakeUpstream, tmp_path: Path) -> None:
    with online_gateway(tmp_path, fake_upstream, []) as gw:
        assert gw.client.get("/api/judges/online").json() == {"rules": [], "running": False, "buffered": 0}
        answer = gw.client.put("/api/judges/online", json={"rules": [{"route": "chat", "judges": ALWAYS}]})
        assert answer.status_code == 409
        assert "Online judging is not running in this process" in answer.json()["message"]
        gw.chat()
        assert gw.queue.attempts == 0


def test_rules_without_a_queue_refuse_to_start(fake_upstream: FakeUpstream, tmp_path: Path) -> None:
    settings = load_settings(
        {"store_uri": f"sqlite:///{tmp_path}/s.db", "llm": _llm(fake_upstream), "judges": _judges([
            {"route": "chat", "judges": ALWAYS}])}, environ={},
    )  # fmt: skip
    with pytest.raises(ConfigError, match="judges.online needs a judge queue"):
        create_app(settings)


def test_serve_with_rules_and_no_queue_exits_2_naming_the_key(fake_upstream: FakeUpstream, tmp_path: Path) -> None:
    config = tmp_path / "online.yaml"
    config.write_text(
        orjson.dumps({"llm": _llm(fake_upstream), "judges": _judges([{"route": "chat", "judges": ALWAYS}])}).decode()
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env["GATEWAY_STORE_URI"] = f"sqlite:///{tmp_path}/store.db"
    result = subprocess.run(
        [GATEWAY_BIN, "serve", "--config", str(config), "--port", str(free_port()), "--workers", "2"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "judges.online needs a judge queue" in result.stderr
