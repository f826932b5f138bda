"""A trace store that is down or slow: summaries wait in a bounded buffer, the rest are dropped and
counted, the writer logs once per outage, and the gateway keeps answering meanwhile (PostgreSQL)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from gateway.telemetry import semconv as sc
from tests.telemetry.conftest import gateway_settings, metric_value, run_app, wait_until
from tests.telemetry.tcp_proxy import tcp_proxy
from tests.telemetry.test_trace_api import emit_llm_call

DROPPED = "gateway_trace_summaries_dropped_total"
WRITTEN = "gateway_trace_summaries_written_total"


def _stored(client: object, limit: int = 1000) -> int:
    import httpx

    assert isinstance(client, httpx.Client)
    answer = client.get("/api/traces", params={"limit": limit})
    return len(answer.json()["traces"]) if answer.status_code == 200 else -1


def test_store_down_drops_and_counts_then_recovers(
    postgres_url: str, otel_env: Callable[..., None], caplog: pytest.LogCaptureFixture
) -> None:
    otel_env()
    caplog.set_level(logging.WARNING, logger="gateway.telemetry")
    with tcp_proxy("127.0.0.1", 5432) as proxy:
        url = postgres_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
        settings = gateway_settings(
            url,
            **{
                "telemetry.summary_buffer": 20,
                "telemetry.summary_batch": 5,
                "telemetry.summary_flush_interval_s": 0.05,
                "serving.refresh_interval_s": 60,
            },
        )
        with run_app(settings) as gw:
            for n in range(3):
                emit_llm_call(gw.provider, n)
            wait_until(lambda: _stored(gw.client) == 3, what="3 summaries before the outage")
            dropped_before = metric_value(gw.client, DROPPED, {"reason": "buffer_full"})
            written_before = metric_value(gw.client, WRITTEN)

            proxy.stop()  # the store is down
            emitted = 60
            for n in range(emitted):
                emit_llm_call(gw.provider, 100 + n, {sc.GATEWAY_LLM_ROUTE: "during-outage"})

            # The gateway keeps answering; the trace API says which dependency failed.
            assert gw.client.get("/ping").status_code == 200
            down = gw.client.get("/api/traces")
            assert down.status_code == 503 and "trace store" in down.json()["message"]
            dropped = metric_value(gw.client, DROPPED, {"reason": "buffer_full"}) - dropped_before
            # At most one batch in the writer's hands plus a full buffer survive; the rest are dropped.
            assert dropped >= emitted - 20 - 5

            proxy.start()  # back, on the same port
            survivors = emitted - dropped
            wait_until(lambda: _stored(gw.client) == 3 + survivors, timeout_s=30, what="buffered summaries written")
            assert metric_value(gw.client, WRITTEN) - written_before == survivors
            assert metric_value(gw.client, DROPPED, {"reason": "buffer_full"}) - dropped_before == dropped

    outage_logs = [r for r in caplog.records if r.name == "gateway.telemetry" and "unavailable" in r.getMessage()]
    recovery_logs = [r for r in caplog.records if r.name == "gateway.telemetry" and "reachable again" in r.getMessage()]
    assert len(outage_logs) == 1, [r.getMessage() for r in outage_logs]  # once per outage, not per row or retry
    assert len(recovery_logs) == 1 and f"{int(dropped)} trace summaries were dropped" in recovery_logs[0].getMessage()


def test_slow_store_fills_the_buffer_without_slowing_anything(postgres_url: str, otel_env: Callable[..., None]) -> None:
    """A writer stuck behind a table lock: spans still end at once, the overflow is counted."""
    otel_env()
    settings = gateway_settings(
        postgres_url,
        **{"telemetry.summary_buffer": 10, "telemetry.summary_batch": 4, "telemetry.summary_flush_interval_s": 0.05},
    )
    locker = sa.create_engine(postgres_url)
    try:
        with run_app(settings) as gw:
            dropped_before = metric_value(gw.client, DROPPED, {"reason": "buffer_full"})
            with locker.connect() as conn:
                conn.execute(sa.text("LOCK TABLE trace_summaries IN ACCESS EXCLUSIVE MODE"))
                emitted = 50
                for n in range(emitted):
                    emit_llm_call(gw.provider, n)
                assert gw.client.get("/ping").status_code == 200
                dropped = metric_value(gw.client, DROPPED, {"reason": "buffer_full"}) - dropped_before
                assert dropped >= emitted - 10 - 4
                conn.rollback()  # releases the lock
            survivors = emitted - dropped
            wait_until(lambda: _stored(gw.client) == survivors, what="summaries written once the lock is gone")
    finally:
        locker.dispose()
