"""Spans leave a real gateway for a real OTLP/HTTP receiver (protobuf decoded with opentelemetry-proto)."""

from __future__ import annotations

import secrets
from collections.abc import Callable

from opentelemetry.trace import SpanKind, Status, StatusCode

from gateway.config import Settings
from gateway.telemetry import semconv as sc
from gateway.telemetry.export import SPANS_DROPPED, SPANS_EXPORTED
from tests.otlp_receiver import CLIENT, SERVER, ReceivedSpan, otlp_receiver
from tests.telemetry.conftest import IRIS_ROWS, metric_value, run_app


def _named(spans: list[ReceivedSpan], name: str) -> list[ReceivedSpan]:
    return [s for s in spans if s.name == name]


def test_invocations_span_continues_the_clients_traceparent(
    iris_settings: Callable[..., Settings], otel_env: Callable[..., None]
) -> None:
    with otlp_receiver() as receiver:
        otel_env(
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
            OTEL_BSP_SCHEDULE_DELAY="50",
            OTEL_EXPORTER_OTLP_HEADERS="x-tenant=team-a",
            OTEL_RESOURCE_ATTRIBUTES="deployment.environment.name=test",
        )
        with run_app(iris_settings()) as gw:
            assert gw.app.state.trace_invocations is True
            trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
            traceparent = f"00-{trace_id}-{parent_id}-01"
            answer = gw.client.post("/invocations", json={"inputs": IRIS_ROWS}, headers={"traceparent": traceparent})
            assert answer.status_code == 200, answer.text
            by_version = gw.client.post("/models/iris/versions/1/invocations", json={"inputs": IRIS_ROWS[:1]})
            assert by_version.status_code == 200, by_version.text
            missing = gw.client.post("/models/nope@champion/invocations", json={"inputs": IRIS_ROWS})
            assert missing.status_code == 404

            spans = receiver.wait_for(lambda got: len(got) >= 3)

    continued = _named(spans, "POST /invocations")
    assert len(continued) == 1
    span = continued[0]
    assert span.kind == SERVER
    assert (span.trace_id, span.parent_span_id) == (trace_id, parent_id)
    assert span.resource["service.name"] == "gateway"
    assert span.resource["deployment.environment.name"] == "test"
    assert span.scope == "gateway.serving"
    assert span.attributes == {
        sc.HTTP_REQUEST_METHOD: "POST",
        sc.HTTP_ROUTE: "/invocations",
        sc.URL_PATH: "/invocations",
        sc.GATEWAY_MODEL_NAME: "iris",
        sc.GATEWAY_MODEL_VERSION: 1,
        sc.HTTP_RESPONSE_STATUS_CODE: 200,
        sc.GATEWAY_REQUEST_ROWS: 3,
    }

    # No traceparent: a new trace, rooted at the gateway.
    (fresh,) = _named(spans, "POST /models/{name}/versions/{version}/invocations")
    assert fresh.parent_span_id == "" and fresh.trace_id != trace_id
    assert fresh.attributes[sc.GATEWAY_REQUEST_ROWS] == 1
    assert fresh.attributes[sc.URL_PATH] == "/models/iris/versions/1/invocations"

    (unknown,) = _named(spans, "POST /models/{ref}/invocations")
    assert unknown.attributes[sc.HTTP_RESPONSE_STATUS_CODE] == 404
    assert unknown.attributes[sc.GATEWAY_MODEL_NAME] == "nope"
    assert sc.GATEWAY_REQUEST_ROWS not in unknown.attributes and not unknown.is_error

    assert all(h.get("x-tenant") == "team-a" for h in receiver.headers)  # OTEL_EXPORTER_OTLP_HEADERS


def test_spans_built_through_the_apps_provider_arrive_with_parent_and_child(
    iris_settings: Callable[..., Settings], otel_env: Callable[..., None]
) -> None:
    """The shape the LLM proxy records: a SERVER span for the request, a CLIENT span per upstream call."""
    with otlp_receiver() as receiver:
        otel_env(OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint, OTEL_SERVICE_NAME="llm-edge")
        with run_app(iris_settings()) as gw:
            tracer = gw.provider.get_tracer("test.llm")
            with tracer.start_as_current_span(
                "chat gpt-4o-mini",
                kind=SpanKind.SERVER,
                attributes={sc.GATEWAY_LLM_ROUTE: "gpt-4o-mini", sc.GEN_AI_OPERATION_NAME: "chat"},
            ) as server_span:
                with tracer.start_as_current_span(
                    "chat llama-3.1-8b",
                    kind=SpanKind.CLIENT,
                    attributes={sc.GEN_AI_REQUEST_MODEL: "llama-3.1-8b", "server.port": 8001},
                ) as client_span:
                    client_span.set_status(Status(StatusCode.ERROR))
                    client_span.set_attribute(sc.ERROR_TYPE, "500")
                server_span.set_attribute(sc.GEN_AI_USAGE_INPUT_TOKENS, 12)
        # Shutting the app down flushed the queue: both spans are there without waiting.
        spans = receiver.received()

    (server,) = [s for s in spans if s.kind == SERVER]
    (client,) = [s for s in spans if s.kind == CLIENT]
    assert client.parent_span_id == server.span_id and client.trace_id == server.trace_id
    assert server.parent_span_id == ""
    assert server.resource["service.name"] == "llm-edge"  # OTEL_SERVICE_NAME wins over our default
    assert server.attributes == {
        sc.GATEWAY_LLM_ROUTE: "gpt-4o-mini",
        sc.GEN_AI_OPERATION_NAME: "chat",
        sc.GEN_AI_USAGE_INPUT_TOKENS: 12,
    }
    assert client.attributes == {sc.GEN_AI_REQUEST_MODEL: "llama-3.1-8b", "server.port": 8001, sc.ERROR_TYPE: "500"}
    assert client.is_error and not server.is_error


def test_no_endpoint_means_no_invocation_spans_and_no_export(
    iris_settings: Callable[..., Settings], otel_env: Callable[..., None]
) -> None:
    otel_env()
    exported_before = SPANS_EXPORTED.get()
    with run_app(iris_settings()) as gw:
        assert gw.app.state.trace_invocations is False
        assert gw.app.state.telemetry.exporters == ()
        for _ in range(5):
            assert gw.client.post("/invocations", json={"inputs": IRIS_ROWS}).status_code == 200
    assert SPANS_EXPORTED.get() == exported_before


def _accounted() -> float:
    return SPANS_EXPORTED.get() + sum(SPANS_DROPPED.get((r,)) for r in ("queue_full", "export_failed", "shutdown"))


def test_exporter_down_never_blocks_requests_and_drops_are_counted(
    iris_settings: Callable[..., Settings], otel_env: Callable[..., None]
) -> None:
    requests = 300
    with otlp_receiver() as receiver:
        otel_env(
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
            OTEL_BSP_MAX_QUEUE_SIZE="16",
            OTEL_BSP_MAX_EXPORT_BATCH_SIZE="4",
            OTEL_BSP_SCHEDULE_DELAY="20",
            OTEL_EXPORTER_OTLP_TIMEOUT="3",
        )
        receiver.stop()  # down: every export is refused, and the exporter retries it for up to 3 s
        accounted_before = _accounted()
        queue_full_before = SPANS_DROPPED.get(("queue_full",))
        with run_app(iris_settings(**{"telemetry.shutdown_timeout_s": 1})) as gw:
            for _ in range(requests):
                assert gw.client.post("/invocations", json={"inputs": IRIS_ROWS}).status_code == 200
            dropped_seen = metric_value(gw.client, "gateway_spans_dropped_total", {"reason": "queue_full"})
        assert dropped_seen > queue_full_before  # /metrics shows the live counter
        # After shutdown every span is accounted for: exported, or dropped with a reason.
        assert _accounted() - accounted_before == requests
        assert receiver.received() == []


def test_slow_exporter_never_blocks_requests(
    iris_settings: Callable[..., Settings], otel_env: Callable[..., None]
) -> None:
    requests = 200
    with otlp_receiver(delay_s=2.0) as receiver:
        otel_env(
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
            OTEL_BSP_MAX_QUEUE_SIZE="8",
            OTEL_BSP_MAX_EXPORT_BATCH_SIZE="4",
            OTEL_BSP_SCHEDULE_DELAY="20",
        )
        accounted_before = _accounted()
        queue_full_before = SPANS_DROPPED.get(("queue_full",))
        with run_app(iris_settings(**{"telemetry.shutdown_timeout_s": 10})) as gw:
            for _ in range(requests):
                assert gw.client.post("/invocations", json={"inputs": IRIS_ROWS}).status_code == 200
        assert SPANS_DROPPED.get(("queue_full",)) > queue_full_before
        assert _accounted() - accounted_before == requests
        # What was exported reached the (slow) receiver.
        assert 0 < len(receiver.received()) < requests


def test_spans_leave_in_batches_of_32_unless_the_environment_says_otherwise(
    iris_settings: Callable[..., Settings], otel_env: Callable[..., None]
) -> None:
    # Only a full batch wakes the exporter (the schedule delay is a minute); shutdown sends the rest.
    requests = 70
    for batch_size, posts in ((None, 3), ("512", 1)):  # ours: 32 + 32 + 6; the SDK's default: all 70 at once
        with otlp_receiver() as receiver:
            otel_env(OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint, OTEL_BSP_SCHEDULE_DELAY="60000")
            if batch_size is not None:
                otel_env(OTEL_BSP_MAX_EXPORT_BATCH_SIZE=batch_size)
            with run_app(iris_settings()) as gw:
                for _ in range(requests):
                    assert gw.client.post("/invocations", json={"inputs": IRIS_ROWS}).status_code == 200
            assert len(receiver.wait_for(lambda got: len(got) >= requests)) == requests
            assert receiver.requests == posts
