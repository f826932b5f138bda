"""``judges.export.mlflow``: its settings (every mistake a ConfigError naming the key, the round trip to
worker processes), and MLflow unreachable: judging goes on, the assessments are stored, each one MLflow
could not take is counted (``gateway_judge_mlflow_feedback_total{outcome="gave_up"}``) and the failure is
logged once. Feedback reaching a real MLflow server: tests/mlflow_interop/test_traces_to_mlflow.py."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from gateway.config import ConfigError, load_settings, settings_from_dict, settings_to_dict
from gateway.judge_export_settings import JudgeExportSettings, MlflowFeedbackSettings
from gateway.store.assessments import CODE, LLM_JUDGE, Assessment
from judges.mlflow_feedback import feedback_body
from tests.judges.worker_procs import FAST_QUEUE
from tests.llm.conftest import (
    PROVIDER_KEY,
    PROVIDER_KEY_ENV,
    FakeUpstream,
    closed_port_url,
    fake_upstream,
    target,
    upstream,
    wait_until,
)
from tests.servers import run_app_in_thread

fake_upstream = fake_upstream  # fixtures, used by name
upstream = upstream

UPSTREAM = "http://127.0.0.1:9/v1"
QUESTION = "Is this safe? [[verdict.safety=true]]"


def _export(export: Any) -> JudgeExportSettings:
    settings = load_settings({"judges": {"export": export}}, environ={})
    return settings.judges.export


def _error(export: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        _export(export)
    return str(caught.value)


def test_the_settings_are_parsed_with_defaults_and_the_short_form() -> None:
    assert load_settings({}, environ={}).judges.export == JudgeExportSettings(mlflow=None)
    assert _export({"mlflow": "http://mlflow:5000/"}).mlflow == MlflowFeedbackSettings("http://mlflow:5000")
    full = _export(
        {
            "mlflow": {
                "tracking_uri": "https://mlflow.example",
                "token_env": "TEAM_MLFLOW_TOKEN",
                "queue_size": "50",
                "concurrency": 2,
                "timeout_s": 3,
                "trace_wait_s": 30,
            }
        }
    )
    assert full.mlflow == MlflowFeedbackSettings("https://mlflow.example", "TEAM_MLFLOW_TOKEN", 50, 2, 3.0, 30.0)


def test_a_bad_key_or_value_names_the_key() -> None:
    assert "judges.export: unknown key(s) langfuse" in _error({"langfuse": "http://x"})
    uri = "http://m"
    assert "judges.export.mlflow: unknown key(s) experiment" in _error(
        {"mlflow": {"tracking_uri": uri, "experiment": 1}}
    )
    assert "judges.export.mlflow.tracking_uri: required" in _error({"mlflow": {"queue_size": 5}})
    assert "judges.export.mlflow.tracking_uri: 'mlflow:5000' is not an MLflow tracking server URI" in _error(
        {"mlflow": "mlflow:5000"}
    )
    zero = {"mlflow": {"tracking_uri": uri, "concurrency": 0}}
    assert "judges.export.mlflow.concurrency: 0 is out of range" in _error(zero)
    negative = {"mlflow": {"tracking_uri": uri, "trace_wait_s": -1}}
    assert "judges.export.mlflow.trace_wait_s: -1 must be a number > 0" in _error(negative)


def test_the_settings_reach_worker_processes() -> None:
    export = {"mlflow": {"tracking_uri": "http://m:5000", "concurrency": 3}}
    settings = load_settings({"judges": {"export": export}}, environ={})
    assert settings_from_dict(settings_to_dict(settings)).judges.export == settings.judges.export
    plain = load_settings({}, environ={})
    assert settings_from_dict(settings_to_dict(plain)).judges.export == JudgeExportSettings()


def _feedback_count(client: httpx.Client, outcome: str) -> float:
    text = client.get("/metrics").text
    found = re.search(rf'^gateway_judge_mlflow_feedback_total\{{outcome="{outcome}"\}} (\S+)$', text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_mlflow_unreachable_judging_goes_on_and_each_loss_is_counted_and_logged_once(
    tmp_path: Path, upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    mlflow_url = closed_port_url().removesuffix("/v1")
    judges = {
        "route": "judge",
        "online": [{"route": "chat", "judges": [{"name": "safety", "rate": 1}]}],
        "online_flush_interval_s": 0.05,
        "queue": FAST_QUEUE,
        "export": {"mlflow": {"tracking_uri": mlflow_url, "trace_wait_s": 1, "timeout_s": 1}},
    }
    llm = {
        "routes": [
            {"name": "judge", "targets": [target(upstream)]},
            {"name": "chat", "capture_content": True, "targets": [target(upstream)]},
        ]
    }
    caplog.set_level(logging.WARNING, logger="judges.mlflow")
    with pytest.MonkeyPatch.context() as env:
        env.setenv(PROVIDER_KEY_ENV, PROVIDER_KEY)
        for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
            env.delenv(name, raising=False)
        settings = load_settings(
            {"store_uri": f"sqlite:///{tmp_path}/store.db", "workers": 1, "llm": llm, "judges": judges,
             "telemetry.summary_flush_interval_s": 0.05},
            environ={},
        )  # fmt: skip
        with run_app_in_thread(create_app(settings)) as base_url, httpx.Client(base_url=base_url, timeout=30) as gw:
            before = _feedback_count(gw, "gave_up")
            body = {"model": "chat", "messages": [{"role": "user", "content": QUESTION}]}
            for _ in range(2):
                answer = gw.post("/v1/chat/completions", json=body)
                assert answer.status_code == 200, answer.text
            wait_until(lambda: _feedback_count(gw, "gave_up") >= before + 2, timeout_s=30, what="two losses counted")
            summaries = gw.get("/api/traces", params={"route": "chat"}).json()["traces"]
            assessed = [gw.get(f"/api/traces/{s['trace_id']}").json()["assessments"] for s in summaries]

    assert len(assessed) == 2 and all(a and a[0]["name"] == "safety" and a[0]["value"] is True for a in assessed)
    warnings = [r for r in caplog.records if r.name == "judges.mlflow" and r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "unreachable" in warnings[0].getMessage(), [r.getMessage() for r in warnings]


def test_a_code_judges_feedback_has_mlflows_code_source() -> None:
    """MLflow's source types are ours: a code judge's verdict is ``CODE`` with its function as the source id, an
    LLM judge's ``LLM_JUDGE`` with its prompt and version."""
    common = {"trace_id": "0af7651916cd43dd8448eb211c80319c", "span_id": "B7AD6B7169203331", "name": "no_secret"}
    code = feedback_body(
        Assessment(id="a1", source_type=CODE, source_id="loadtest.code_judge:says_no_secret", value=True, **common)
    )["assessment"]
    llm = feedback_body(Assessment(id="a2", source_type=LLM_JUDGE, source_id="judges.safety/1", value=False, **common))[
        "assessment"
    ]
    assert code["source"] == {"source_type": "CODE", "source_id": "loadtest.code_judge:says_no_secret"}
    assert llm["source"] == {"source_type": "LLM_JUDGE", "source_id": "judges.safety/1"}
    assert code["trace_id"] == llm["trace_id"] == "tr-0af7651916cd43dd8448eb211c80319c"
    assert code["span_id"] == "b7ad6b7169203331" and code["feedback"] == {"value": True}
