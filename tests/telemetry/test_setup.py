"""Provider setup from the OTEL_* variables: what is honoured, and what refuses to start (naming the variable)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import ConsoleSpanExporter

from gateway.config import ConfigError, TelemetrySettings, load_settings, settings_from_dict, settings_to_dict
from gateway.store.registry import RegistryStore
from gateway.telemetry.setup import build_resource, build_telemetry, check_otel_environment, span_exporters
from tests.telemetry.conftest import gateway_settings, run_app


def test_exporters_follow_the_standard_variables() -> None:
    assert span_exporters({}) == []  # the embedded default exports nothing
    (otlp,) = span_exporters({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert isinstance(otlp, OTLPSpanExporter)
    (traces_only,) = span_exporters({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"})
    assert isinstance(traces_only, OTLPSpanExporter)
    assert span_exporters({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318", "OTEL_TRACES_EXPORTER": "none"}) == []
    (console,) = span_exporters({"OTEL_TRACES_EXPORTER": "console"})
    assert isinstance(console, ConsoleSpanExporter)


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "http/json"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4317", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"}, "grpc"),
    ],
)
def test_exporter_choices_we_cannot_honour_refuse_to_start(environ: dict[str, str], named: str) -> None:
    try:
        import opentelemetry.exporter.otlp.proto.grpc  # noqa: F401
    except ImportError:
        pass
    else:
        if named == "grpc":
            pytest.skip("opentelemetry-exporter-otlp-proto-grpc is installed here, so grpc is honoured")
    with pytest.raises(ConfigError, match=named):
        span_exporters(environ)
    with pytest.raises(ConfigError, match=named):
        check_otel_environment(environ)  # what create_app and `gateway serve` run before binding


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"OTEL_BSP_MAX_QUEUE_SIZE": "0"}, "OTEL_BSP_MAX_QUEUE_SIZE"),
        ({"OTEL_BSP_MAX_QUEUE_SIZE": "lots"}, "OTEL_BSP_MAX_QUEUE_SIZE"),
        ({"OTEL_BSP_MAX_QUEUE_SIZE": "8", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "16"}, "max_export_batch_size"),
    ],
)
def test_bad_batch_settings_refuse_to_start(
    sqlite_url: str, otel_env: Callable[..., None], environ: dict[str, str], named: str
) -> None:
    otel_env(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:4318", **environ)
    store = RegistryStore.open(sqlite_url)
    try:
        with pytest.raises(ConfigError, match=named):
            build_telemetry(TelemetrySettings(), store.engine, environ={"OTEL_EXPORTER_OTLP_ENDPOINT": "x", **environ})
    finally:
        store.close()


def test_a_gateway_with_a_bad_otel_variable_does_not_start(sqlite_url: str, otel_env: Callable[..., None]) -> None:
    otel_env(OTEL_TRACES_EXPORTER="jaeger")
    with pytest.raises(ConfigError, match="OTEL_TRACES_EXPORTER"), run_app(gateway_settings(sqlite_url)):
        pass
    # A combination only the SDK checks fails the lifespan: the server never starts answering.
    otel_env(OTEL_TRACES_EXPORTER="otlp", OTEL_BSP_MAX_QUEUE_SIZE="8", OTEL_BSP_MAX_EXPORT_BATCH_SIZE="16")
    with pytest.raises(RuntimeError, match="did not start"), run_app(gateway_settings(sqlite_url)):
        pass


def test_resource_defaults_and_overrides(otel_env: Callable[..., None]) -> None:
    otel_env()
    resource = build_resource().attributes
    assert resource["service.name"] == "gateway" and resource["service.version"]
    otel_env(OTEL_RESOURCE_ATTRIBUTES="service.name=from-attributes,team=ml")
    assert build_resource().attributes["service.name"] == "from-attributes"
    assert build_resource().attributes["team"] == "ml"
    otel_env(OTEL_SERVICE_NAME="from-service-name")
    assert build_resource().attributes["service.name"] == "from-service-name"


def test_telemetry_settings_are_read_and_validated() -> None:
    settings = load_settings(
        config_file=None,
        environ={"GATEWAY_TELEMETRY_SUMMARY_BUFFER": "50", "GATEWAY_TELEMETRY_SUMMARY_BATCH": "7"},
    )
    assert (settings.telemetry.summary_buffer, settings.telemetry.summary_batch) == (50, 7)
    assert settings_from_dict(settings_to_dict(settings)).telemetry == settings.telemetry  # to uvicorn workers
    with pytest.raises(ConfigError, match="GATEWAY_TELEMETRY_SUMMARY_BATCH"):
        load_settings(environ={"GATEWAY_TELEMETRY_SUMMARY_BATCH": "0"})


def test_telemetry_caps_the_switch_interval_and_never_raises_it(sqlite_url: str) -> None:
    """The telemetry threads hold the GIL for ms at a time: the event loop must get it back within 1 ms."""
    import sys

    from gateway.telemetry.setup import MAX_SWITCH_INTERVAL_S

    before = sys.getswitchinterval()
    store = RegistryStore.open(sqlite_url)
    try:
        sys.setswitchinterval(0.005)  # the interpreter's default
        build_telemetry(TelemetrySettings(), store.engine, environ={}).shutdown()
        assert sys.getswitchinterval() == pytest.approx(MAX_SWITCH_INTERVAL_S)
        sys.setswitchinterval(0.0002)  # someone chose a shorter one: kept
        build_telemetry(TelemetrySettings(), store.engine, environ={}).shutdown()
        assert sys.getswitchinterval() == pytest.approx(0.0002)
    finally:
        sys.setswitchinterval(before)
        store.close()
