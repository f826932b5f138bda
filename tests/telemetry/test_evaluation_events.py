"""gen_ai.evaluation.result events leave for a real OTLP/HTTP receiver (``/v1/logs``, decoded with
opentelemetry-proto), parented to the judged span; without an endpoint they cost nothing; a silent
endpoint never holds up an emit or the shutdown."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Iterator

import pytest
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs.export import ConsoleLogRecordExporter

from gateway.config import ConfigError, TelemetrySettings
from gateway.store.registry import RegistryStore
from gateway.telemetry import semconv as sc
from gateway.telemetry.events import EVENTS_DROPPED, EVENTS_EXPORTED, SCOPE
from gateway.telemetry.setup import Telemetry, build_telemetry, check_otel_environment, log_exporters
from tests.otlp_receiver import ReceivedLogRecord, black_hole, otlp_receiver
from tests.telemetry.conftest import gateway_settings, run_app

JUDGE_ATTRIBUTES = {"gateway.judge.name": "relevance_to_query", "gateway.judge.prompt.version": 3}


@pytest.fixture
def store(sqlite_url: str) -> Iterator[RegistryStore]:
    store = RegistryStore.open(sqlite_url)
    try:
        yield store
    finally:
        store.close()


def _accounted() -> float:
    return EVENTS_EXPORTED.get() + sum(
        EVENTS_DROPPED.get((reason,)) for reason in ("queue_full", "export_failed", "shutdown", "error")
    )


def _by_name(records: list[ReceivedLogRecord]) -> dict[str, ReceivedLogRecord]:
    return {str(r.attributes[sc.GEN_AI_EVALUATION_NAME]): r for r in records}


def test_results_arrive_parented_to_the_judged_span_with_every_attribute(
    store: RegistryStore, otel_env: Callable[..., None]
) -> None:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    with otlp_receiver() as receiver:
        otel_env(OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint, OTEL_BLRP_SCHEDULE_DELAY="50")
        exported_before = EVENTS_EXPORTED.get()
        telemetry = build_telemetry(TelemetrySettings(), store.engine)
        try:
            events = telemetry.events
            assert events.enabled
            common = {"trace_id": trace_id, "span_id": span_id, "attributes": JUDGE_ATTRIBUTES}
            events.emit_result(
                name="relevance_to_query",
                score=4,  # an int score still leaves as a double
                label=None,
                explanation="Answers the question.",
                error_type=None,
                response_id="chatcmpl-1",
                **common,
            )
            events.emit_result(
                name="safety", score=1.0, label="yes", explanation="Nothing unsafe.", error_type=None, **common
            )
            events.emit_result(
                name="correctness", score=None, label=None, explanation=None, error_type="missing_input", **common
            )
            # A result on a whole trace: the trace id alone.
            events.emit_result(
                name="trace_level",
                trace_id=trace_id,
                span_id=None,
                score=0.5,
                label=None,
                explanation=None,
                error_type=None,
            )
            records = receiver.wait_for_logs(lambda got: len(got) >= 4)
        finally:
            telemetry.shutdown()

    assert len(records) == 4
    by_name = _by_name(records)
    for name in ("relevance_to_query", "safety", "correctness"):
        record = by_name[name]
        assert record.event_name == sc.EVENT_GEN_AI_EVALUATION_RESULT
        assert (record.trace_id, record.span_id) == (trace_id, span_id)
        assert record.flags & 0x01  # sampled, like the judged span
        assert record.scope == SCOPE
        assert record.resource["service.name"] == "gateway"
        assert record.time_ns > 0

    scored = by_name["relevance_to_query"]
    assert scored.attributes == {
        sc.GEN_AI_EVALUATION_NAME: "relevance_to_query",
        sc.GEN_AI_EVALUATION_SCORE_VALUE: 4.0,
        sc.GEN_AI_EVALUATION_EXPLANATION: "Answers the question.",
        sc.GEN_AI_RESPONSE_ID: "chatcmpl-1",
        **JUDGE_ATTRIBUTES,
    }
    assert scored.attribute_kinds == {
        sc.GEN_AI_EVALUATION_NAME: "string_value",
        sc.GEN_AI_EVALUATION_SCORE_VALUE: "double_value",
        sc.GEN_AI_EVALUATION_EXPLANATION: "string_value",
        sc.GEN_AI_RESPONSE_ID: "string_value",
        "gateway.judge.name": "string_value",
        "gateway.judge.prompt.version": "int_value",
    }

    labelled = by_name["safety"]
    assert labelled.attributes == {
        sc.GEN_AI_EVALUATION_NAME: "safety",
        sc.GEN_AI_EVALUATION_SCORE_VALUE: 1.0,
        sc.GEN_AI_EVALUATION_SCORE_LABEL: "yes",
        sc.GEN_AI_EVALUATION_EXPLANATION: "Nothing unsafe.",
        **JUDGE_ATTRIBUTES,
    }
    assert labelled.attribute_kinds[sc.GEN_AI_EVALUATION_SCORE_VALUE] == "double_value"
    assert labelled.attribute_kinds[sc.GEN_AI_EVALUATION_SCORE_LABEL] == "string_value"

    failed = by_name["correctness"]
    assert failed.attributes == {
        sc.GEN_AI_EVALUATION_NAME: "correctness",
        sc.ERROR_TYPE: "missing_input",
        **JUDGE_ATTRIBUTES,
    }
    assert failed.attribute_kinds[sc.ERROR_TYPE] == "string_value"
    assert [r for r in records if sc.ERROR_TYPE in r.attributes] == [failed]  # error.type on the error only

    whole_trace = by_name["trace_level"]
    assert (whole_trace.trace_id, whole_trace.span_id) == (trace_id, "")
    assert whole_trace.attributes == {sc.GEN_AI_EVALUATION_NAME: "trace_level", sc.GEN_AI_EVALUATION_SCORE_VALUE: 0.5}

    assert EVENTS_EXPORTED.get() - exported_before == 4


def test_the_apps_events_go_to_the_logs_endpoint_and_shutdown_flushes_them(
    sqlite_url: str, otel_env: Callable[..., None]
) -> None:
    """Through a running gateway: ``app.state.telemetry.events``; only the lifespan's shutdown sends the
    record (the schedule delay is a minute), to OTEL_EXPORTER_OTLP_LOGS_ENDPOINT as given."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    with otlp_receiver() as receiver:
        otel_env(
            OTEL_EXPORTER_OTLP_LOGS_ENDPOINT=f"{receiver.endpoint}/v1/logs",
            OTEL_BLRP_SCHEDULE_DELAY="60000",
            OTEL_EXPORTER_OTLP_HEADERS="x-tenant=team-a",
        )
        with run_app(gateway_settings(sqlite_url)) as gw:
            telemetry: Telemetry = gw.app.state.telemetry
            assert telemetry.exporters == ()  # a logs endpoint only: spans are not exported
            telemetry.events.emit_result(
                name="conciseness",
                trace_id=trace_id,
                span_id=span_id,
                score=0.0,
                label="no",
                explanation=None,
                error_type=None,
            )
        (record,) = receiver.received_logs()
    assert (record.event_name, record.trace_id, record.span_id) == (
        sc.EVENT_GEN_AI_EVALUATION_RESULT,
        trace_id,
        span_id,
    )
    assert record.attributes[sc.GEN_AI_EVALUATION_SCORE_VALUE] == 0.0
    assert receiver.received() == [] and receiver.log_requests == 1
    assert receiver.headers[0].get("x-tenant") == "team-a"


def test_without_an_endpoint_events_are_a_no_op(store: RegistryStore, otel_env: Callable[..., None]) -> None:
    otel_env()
    accounted_before = _accounted()
    telemetry = build_telemetry(TelemetrySettings(), store.engine)
    assert not telemetry.events.enabled
    for trace_id, span_id in ((secrets.token_hex(16), secrets.token_hex(8)), (None, None), ("not hex", "x")):
        assert (
            telemetry.events.emit_result(
                name="safety",
                trace_id=trace_id,
                span_id=span_id,
                score=1.0,
                label="yes",
                explanation=None,
                error_type=None,
            )
            is None
        )
    telemetry.shutdown()
    assert _accounted() == accounted_before

    # OTEL_LOGS_EXPORTER=none keeps events home while spans still go to the endpoint.
    otel_env(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:4318", OTEL_LOGS_EXPORTER="none")
    telemetry = build_telemetry(TelemetrySettings(), store.engine)
    try:
        assert not telemetry.events.enabled and telemetry.export_enabled
    finally:
        telemetry.shutdown()


def test_a_black_holed_endpoint_blocks_neither_emits_nor_shutdown(
    store: RegistryStore, otel_env: Callable[..., None]
) -> None:
    """The endpoint accepts connections and never answers; each export would wait 60 s. Emits return at
    once (past the queue, records are dropped and counted), and shutdown gives up after its bound (1 s,
    plus 1 s to abort the exporter) with every record accounted for."""
    emitted = 100
    with black_hole() as endpoint:
        otel_env(
            OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
            OTEL_EXPORTER_OTLP_TIMEOUT="60",
            OTEL_BLRP_MAX_QUEUE_SIZE="8",
            OTEL_BLRP_MAX_EXPORT_BATCH_SIZE="4",
            OTEL_BLRP_SCHEDULE_DELAY="20",
        )
        accounted_before = _accounted()
        queue_full_before = EVENTS_DROPPED.get(("queue_full",))
        shutdown_before = EVENTS_DROPPED.get(("shutdown",))
        telemetry = build_telemetry(TelemetrySettings(shutdown_timeout_s=1.0), store.engine)
        for index in range(emitted):
            telemetry.events.emit_result(
                name="safety",
                trace_id=secrets.token_hex(16),
                span_id=secrets.token_hex(8),
                score=float(index % 2),
                label=None,
                explanation=None,
                error_type=None,
            )
        # The first 8 fill the queue (a batch in an export that never ends holds its slots); the rest are
        # dropped at once instead of waiting.
        assert EVENTS_DROPPED.get(("queue_full",)) - queue_full_before == emitted - 8

        stopper = threading.Thread(target=telemetry.shutdown, name="test-telemetry-shutdown", daemon=True)
        stopper.start()
        stopper.join(30)  # far above the bound: a hang fails here instead of stalling the suite
        assert not stopper.is_alive(), "Telemetry.shutdown did not return"

    # Whether the worker was already stuck in an export or got stuck in the final flush, nothing was
    # exported: the 8 are counted as dropped at shutdown, and every record is accounted for.
    assert EVENTS_DROPPED.get(("shutdown",)) - shutdown_before == 8
    assert _accounted() - accounted_before == emitted


def test_log_exporters_follow_the_standard_variables() -> None:
    assert log_exporters({}) == []
    (otlp,) = log_exporters({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert isinstance(otlp, OTLPLogExporter)
    (logs_only,) = log_exporters({"OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "http://127.0.0.1:4318/v1/logs"})
    assert isinstance(logs_only, OTLPLogExporter)
    assert log_exporters({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}) == []
    assert log_exporters({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318", "OTEL_LOGS_EXPORTER": "none"}) == []
    (console,) = log_exporters({"OTEL_LOGS_EXPORTER": "console"})
    assert isinstance(console, ConsoleLogRecordExporter)


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"OTEL_LOGS_EXPORTER": "syslog"}, "OTEL_LOGS_EXPORTER"),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318", "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL": "http/json"},
            "http/json",
        ),
        ({"OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "http://x:4318", "OTEL_BLRP_MAX_QUEUE_SIZE": "0"}, "OTEL_BLRP_MAX_QUEUE"),
    ],
)
def test_logs_choices_we_cannot_honour_refuse_to_start(
    store: RegistryStore, environ: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError, match=named):
        check_otel_environment(environ)  # what create_app and `gateway serve` run before binding
    with pytest.raises(ConfigError, match=named):
        build_telemetry(TelemetrySettings(), store.engine, environ=environ)


def test_a_log_batch_larger_than_the_queue_refuses_to_start(
    store: RegistryStore, otel_env: Callable[..., None]
) -> None:
    # The SDK reads OTEL_BLRP_MAX_EXPORT_BATCH_SIZE itself (from os.environ) and refuses the combination.
    otel_env(OTEL_LOGS_EXPORTER="console", OTEL_BLRP_MAX_QUEUE_SIZE="8", OTEL_BLRP_MAX_EXPORT_BATCH_SIZE="16")
    with pytest.raises(ConfigError, match="max_export_batch_size"):
        build_telemetry(TelemetrySettings(), store.engine)


def test_spans_and_events_black_holed_stop_together_within_one_bound(
    store: RegistryStore, otel_env: Callable[..., None]
) -> None:
    """Both exporters stuck on a black-holed endpoint: their shutdowns run side by side, so the whole
    telemetry stops in about one ``shutdown_timeout_s`` (+ the abort), not in their sum (issue 13: about
    12 s with the endpoint black-holed, past what SIGTERM's drain allows)."""
    timeout_s = 3.0
    with black_hole() as endpoint:
        otel_env(OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, OTEL_EXPORTER_OTLP_TIMEOUT="60", OTEL_BSP_SCHEDULE_DELAY="20")
        telemetry = build_telemetry(TelemetrySettings(shutdown_timeout_s=timeout_s), store.engine)
        telemetry.provider.get_tracer("test").start_span("stuck").end()
        telemetry.events.emit_result(
            name="safety", trace_id=secrets.token_hex(16), span_id=secrets.token_hex(8), score=1.0,
            label=None, explanation=None, error_type=None,
        )  # fmt: skip
        stopper = threading.Thread(target=telemetry.shutdown, name="test-telemetry-shutdown", daemon=True)
        stopper.start()
        # One bound is timeout_s + 1.5 s; one after the other, the two parts would need 2 x (timeout_s + 1).
        stopper.join(2 * timeout_s + 0.5)
        assert not stopper.is_alive(), "spans and events were stopped one after the other"
