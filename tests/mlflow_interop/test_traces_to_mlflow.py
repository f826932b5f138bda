"""The gateway's traces and its judges' verdicts in a real ``mlflow server``: spans exported over OTLP to
MLflow's ``/v1/traces`` (``x-mlflow-experiment-id`` header), read back with ``MlflowClient``; with
``judges.export.mlflow``, an online judge's assessment logged as feedback on the judged call's trace.

One MLflow server for the module (its fixture); each test its own experiment, gateway and store. The fake
upstream is the LLM provider and the judge (a ``[[verdict.safety=false]]`` marker scripts the verdict)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from mlflow import MlflowClient
from mlflow.entities import Trace

from gateway.app import create_app
from gateway.config import load_settings
from tests.judges.worker_procs import FAST_QUEUE
from tests.llm.conftest import PROVIDER_KEY, PROVIDER_KEY_ENV, FakeUpstream, fake_upstream, target, upstream
from tests.mlflow_interop.conftest import MlflowServer
from tests.servers import run_app_in_thread
from tests.telemetry.conftest import wait_until as _wait_until

fake_upstream = fake_upstream  # fixtures, used by name
upstream = upstream

QUESTION = "Which planet is largest? [[verdict.safety=false]]"
SYSTEM = {"role": "system", "content": "Be brief."}
CHAT = {"model": "chat", "messages": [SYSTEM, {"role": "user", "content": QUESTION}]}


@contextmanager
def gateway_to_mlflow(
    tmp_path: Path,
    up: FakeUpstream,
    mlflow_url: str,
    experiment_id: str,
    *,
    capture: bool,
    judges: dict[str, Any],
    export_delay_ms: int = 100,
) -> Iterator[httpx.Client]:
    """A gateway whose spans go to ``mlflow_url``'s ``/v1/traces`` in ``experiment_id`` (the documented recipe:
    two OTEL_* variables), its route ``chat`` capturing content or not, the judge on route ``judge``."""
    llm = {
        "routes": [
            {"name": "judge", "targets": [target(up)]},
            {"name": "chat", "capture_content": capture, "targets": [target(up)]},
        ]
    }
    with pytest.MonkeyPatch.context() as env:
        env.setenv(PROVIDER_KEY_ENV, PROVIDER_KEY)
        for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "OTEL_TRACES_EXPORTER"):
            env.delenv(name, raising=False)
        env.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"{mlflow_url}/v1/traces")
        env.setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", f"x-mlflow-experiment-id={experiment_id}")
        # The SDK's default is 5 s: the test would only wait longer.
        env.setenv("OTEL_BSP_SCHEDULE_DELAY", str(export_delay_ms))
        settings = load_settings(
            {"store_uri": f"sqlite:///{tmp_path}/store.db", "workers": 1, "llm": llm, "judges": judges,
             "telemetry.summary_flush_interval_s": 0.05},
            environ={},
        )  # fmt: skip
        with run_app_in_thread(create_app(settings)) as base_url, httpx.Client(base_url=base_url, timeout=30) as client:
            yield client


def wait_until(condition: Callable[[], Any], timeout_s: float, what: str) -> Any:
    """Poll ``condition`` every 0.25 s (a one-worker MLflow server on SQLite answers the polls between the
    span exports it ingests: polling it harder only slows those) until it is truthy, for at most ``timeout_s``."""
    return _wait_until(lambda: condition() or time.sleep(0.2), timeout_s=timeout_s, what=what)


def _experiment(server: MlflowServer) -> tuple[MlflowClient, str]:
    client = MlflowClient(tracking_uri=server.url)
    return client, client.create_experiment(f"gateway-{secrets.token_hex(4)}")


def _the_trace(client: MlflowClient, experiment_id: str, what: str) -> Trace:
    """The one trace of the experiment whose root span is the proxy's SERVER span (judge calls are traces too)."""

    def found() -> list[Trace]:
        traces = client.search_traces(locations=[experiment_id])
        return [t for t in traces if t.data.spans and t.data.spans[0].name.startswith("POST /v1/")]

    (trace,) = wait_until(found, timeout_s=30, what=what)
    assert isinstance(trace, Trace)
    return trace


def _feedback_counts(gw: httpx.Client) -> dict[str, float]:
    """``gateway_judge_mlflow_feedback_total`` by outcome, from the gateway's /metrics."""
    counts: dict[str, float] = {}
    for line in gw.get("/metrics").text.splitlines():
        if line.startswith('gateway_judge_mlflow_feedback_total{outcome="'):
            outcome = line.split('"')[1]
            counts[outcome] = float(line.rsplit(" ", 1)[1])
    return counts


def _spans(trace: Trace) -> dict[str, Any]:
    return {span.name: span for span in trace.data.spans}


@pytest.mark.parametrize("capture", [True, False], ids=["capture", "no-capture"])
def test_a_proxied_call_is_an_mlflow_trace_with_model_usage_and_content(
    tmp_path: Path, upstream: FakeUpstream, mlflow_server: MlflowServer, capture: bool
) -> None:
    client, experiment_id = _experiment(mlflow_server)
    with gateway_to_mlflow(tmp_path, upstream, mlflow_server.url, experiment_id, capture=capture, judges={}) as gw:
        answer = gw.post("/v1/chat/completions", json=CHAT)
        assert answer.status_code == 200, answer.text
        reply = answer.json()
        trace = _the_trace(client, experiment_id, "the call's trace in MLflow")
        # search_traces returns what get_trace does, by MLflow's id: tr-<the OTel trace id>
        fetched = client.get_trace(trace.info.trace_id)

    info = fetched.info
    assert info.trace_id.startswith("tr-") and len(info.trace_id) == 35
    assert info.state.value == "OK"
    usage = reply["usage"]
    assert info.token_usage == {
        "input_tokens": usage["prompt_tokens"],
        "output_tokens": usage["completion_tokens"],
        "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"],
    }
    spans = _spans(fetched)
    server, model_call = spans["POST /v1/chat/completions"], spans["chat fake-model"]
    assert server.parent_id is None and model_call.parent_id == server.span_id
    for span in (server, model_call):
        assert span.span_type == "CHAT_MODEL"
        assert span.attributes["mlflow.llm.model"] == "fake-model"
        assert span.attributes["gen_ai.request.model"] == "fake-model"  # the conventions' attributes, as sent
        assert span.attributes["mlflow.chat.tokenUsage"]["input_tokens"] == usage["prompt_tokens"]
    answer_text = reply["choices"][0]["message"]["content"]
    if capture:
        # The request and response columns: the last user message and the answer, not the GenAI JSON.
        assert (info.request_preview, info.response_preview) == (QUESTION, answer_text)
        assert server.inputs["messages"][-1] == {"role": "user", "content": QUESTION}
        assert server.outputs["choices"][0]["message"] == {"role": "assistant", "content": answer_text}
        assert "gen_ai.input.messages" in server.attributes and "gen_ai.output.messages" in model_call.attributes
    else:
        assert info.request_preview is None and info.response_preview is None
        exported = orjson.dumps([s.to_dict() for s in fetched.data.spans], default=str).decode()
        assert "Which planet" not in exported and answer_text not in exported


def test_judges_assessments_are_feedback_on_the_judged_trace(
    tmp_path: Path, upstream: FakeUpstream, mlflow_server: MlflowServer
) -> None:
    """Two judges on the call: ``safety`` says false; ``conciseness`` is scripted a value of the wrong type
    (twice: the repair request too), an error assessment, which MLflow gets as feedback with an ``error``."""
    client, experiment_id = _experiment(mlflow_server)
    judges = {
        "route": "judge",
        "online": [{"route": "chat", "judges": [{"name": "safety", "rate": 1}, {"name": "conciseness", "rate": 1}]}],
        "online_flush_interval_s": 0.05,
        "queue": FAST_QUEUE,
        "export": {"mlflow": {"tracking_uri": mlflow_server.url}},
    }
    question = "Which planet is largest? [[verdict.safety=false]] [[verdict.conciseness=[1]]]"
    body = {"model": "chat", "messages": [SYSTEM, {"role": "user", "content": question}]}
    # Spans leave after 1.5 s, the verdict sooner: MLflow does not hold the trace yet when the feedback is first
    # sent (404), and the exporter tries again until it does.
    with gateway_to_mlflow(
        tmp_path, upstream, mlflow_server.url, experiment_id, capture=True, judges=judges, export_delay_ms=1500
    ) as gw:
        before = _feedback_counts(gw)
        answer = gw.post("/v1/chat/completions", json=body)
        assert answer.status_code == 200, answer.text
        trace = _the_trace(client, experiment_id, "the call's trace in MLflow")
        otel_trace_id = trace.info.trace_id.removeprefix("tr-")

        def ours() -> dict[str, dict[str, Any]]:
            found = gw.get(f"/api/traces/{otel_trace_id}").json().get("assessments") or []
            return {a["name"]: a for a in found} if len(found) == 2 else {}

        stored = wait_until(ours, timeout_s=30, what="the judges' assessments in the gateway's store")

        def feedback() -> dict[str, Any]:
            logged = client.get_trace(trace.info.trace_id).info.assessments
            return {a.name: a for a in logged} if len(logged) == 2 else {}

        logged = wait_until(feedback, timeout_s=30, what="the judges' feedback in MLflow")
        counted = _feedback_counts(gw)

    changed = {outcome: counted[outcome] - before.get(outcome, 0.0) for outcome in counted}
    assert {outcome: delta for outcome, delta in changed.items() if delta} == {"logged": 2.0}
    server_span = _spans(trace)["POST /v1/chat/completions"]
    for name in ("safety", "conciseness"):
        ours_, theirs = stored[name], logged[name]
        assert theirs.trace_id == trace.info.trace_id and theirs.span_id == server_span.span_id == ours_["span_id"]
        assert theirs.source.source_type == "LLM_JUDGE" and theirs.source.source_id == ours_["source_id"]
        assert theirs.metadata["gateway.assessment_id"] == ours_["id"]
        assert theirs.metadata["gateway.judge.route"] == "judge"
        assert theirs.metadata["gateway.judge.trace_id"] == ours_["judge_trace_id"]
    safety, conciseness = logged["safety"], logged["conciseness"]
    assert (stored["safety"]["value"], stored["safety"]["error_code"]) == (False, None)
    assert safety.value is False and safety.error is None
    assert safety.rationale == stored["safety"]["rationale"] and safety.rationale
    error_code = stored["conciseness"]["error_code"]
    assert error_code is not None and stored["conciseness"]["value"] is None
    assert conciseness.value is None and conciseness.error is not None
    assert conciseness.error.error_code == error_code
    assert conciseness.error.error_message == stored["conciseness"]["error_message"]
