"""One OpenTelemetry ``TracerProvider`` (and ``LoggerProvider``) per app, built from Settings and the standard
``OTEL_*`` variables.

The provider is never installed as the global one: tests build many apps in one process, and the
app hands its provider to whatever records spans (the LLM proxy, ``/invocations``). Its processors:

- ``BoundedBatchSpanProcessor`` → OTLP (http/protobuf; grpc when its package is installed), only when
  an endpoint is configured (``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``)
  or ``OTEL_TRACES_EXPORTER`` asks for one;
- ``TraceSummarySink`` → the trace store, always.

Events (``gen_ai.evaluation.result``, see ``gateway.telemetry.events``) go through a ``LoggerProvider`` of
their own, built the same way from the logs variables: OTLP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_LOGS_ENDPOINT`` is set or ``OTEL_LOGS_EXPORTER`` asks for it, the queue from
``OTEL_BLRP_*``; with neither, ``Telemetry.events`` is a no-op.

The SDK itself reads ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER(_ARG)``,
``OTEL_BSP_*`` and ``OTEL_EXPORTER_OTLP_*`` (headers, timeout, compression, certificates); we only add
defaults (``service.name=gateway``, export batches of 32 spans: see ``export.DEFAULT_MAX_EXPORT_BATCH_SIZE``)
and refuse values we cannot honour, at start, naming them.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping

from opentelemetry.sdk._logs.export import ConsoleLogRecordExporter, LogRecordExporter
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Tracer
from sqlalchemy.engine import Engine

from gateway import __version__
from gateway.config import ConfigError, TelemetrySettings
from gateway.store.traces import TraceStore
from gateway.telemetry.events import BoundedBatchLogRecordProcessor, EvaluationEvents
from gateway.telemetry.export import BoundedBatchSpanProcessor, export_batch_size_from_env, max_queue_size_from_env
from gateway.telemetry.store_sink import TraceSummarySink

logger = logging.getLogger("gateway.telemetry")

DEFAULT_SERVICE_NAME = "gateway"
_ABORT_GRACE_S = 1.5  # past shutdown_timeout_s: what aborting a stuck exporter may take (export.py waits 1 s)
# The span exporter and the summary writer are threads doing pure-Python work (encoding a batch of spans
# takes milliseconds) while holding the GIL; when a request arrives meanwhile, the event loop waits for the
# interpreter's switch interval, 5 ms by default. At most 1 ms instead: the paced stream TTFC p99
# (loadtest/llm_paced.py) then matched OTEL_TRACES_EXPORTER=none (docs/benchmarks.md).
MAX_SWITCH_INTERVAL_S = 0.001
_EXPORTERS = ("otlp", "console", "none")
_LOG_QUEUE_SIZE = "OTEL_BLRP_MAX_QUEUE_SIZE"
_LOG_BATCH_SIZE = "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE"


@dataclasses.dataclass(eq=False)
class Telemetry:
    """What an app's telemetry consists of; built once in the lifespan, shut down at its end.

    ``export_enabled`` says whether spans leave the process: the cheap check a hot path makes
    before doing any span work of its own (``/invocations`` spans are only made when it is true).
    ``events`` emits ``gen_ai.evaluation.result`` events (a no-op when logs are not exported).
    """

    provider: TracerProvider
    sink: TraceSummarySink
    traces: TraceStore
    exporters: tuple[BoundedBatchSpanProcessor, ...]
    shutdown_timeout_s: float
    events: EvaluationEvents = dataclasses.field(default_factory=EvaluationEvents)

    @property
    def export_enabled(self) -> bool:
        return bool(self.exporters)

    def tracer(self, name: str) -> Tracer:
        return self.provider.get_tracer(name, __version__)

    def shutdown(self) -> None:
        """Flush spans, events and summaries, all at once, then stop. Blocking, for at most about
        ``shutdown_timeout_s`` + 1 s in all: each part gives up after ``shutdown_timeout_s`` (an exporter
        stuck on a black-holed endpoint is then aborted, which takes up to 1 s more), and the parts run in
        parallel, so SIGTERM does not wait for their sum (once 2 x 6 s with both exporters black-holed)."""
        timeout_s = self.shutdown_timeout_s
        parts: list[Callable[[], object]] = [
            *(functools.partial(processor.shutdown, timeout_s) for processor in self.exporters),
            functools.partial(self.events.shutdown, timeout_s),
            functools.partial(self.sink.shutdown, timeout_s),
        ]
        threads = [threading.Thread(target=part, name="telemetry-shutdown", daemon=True) for part in parts]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + timeout_s + _ABORT_GRACE_S
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if any(thread.is_alive() for thread in threads):
            logger.warning("Telemetry did not stop within %.1f s at shutdown; leaving the rest", timeout_s)
        self.provider.shutdown()  # the processors above are already stopped: this returns at once


def build_telemetry(settings: TelemetrySettings, engine: Engine, environ: Mapping[str, str] | None = None) -> Telemetry:
    """The providers with their processors. Raises ``ConfigError`` for an ``OTEL_*`` value it cannot honour.
    Lowers the process's switch interval to ``MAX_SWITCH_INTERVAL_S`` (their threads, see there).

    ``environ`` is where the gateway's own decisions read (default ``os.environ``); the SDK and the
    OTLP exporter always read ``os.environ``.
    """
    env = os.environ if environ is None else environ
    if sys.getswitchinterval() > MAX_SWITCH_INTERVAL_S:  # process-wide; never raised
        sys.setswitchinterval(MAX_SWITCH_INTERVAL_S)
    queue_size = max_queue_size_from_env(env)
    batch_size = export_batch_size_from_env(queue_size, env)
    exporters = tuple(
        BoundedBatchSpanProcessor(exporter, max_queue_size=queue_size, max_export_batch_size=batch_size)
        for exporter in span_exporters(env)
    )
    resource = build_resource()
    events = build_events(env, resource)
    traces = TraceStore(engine)
    sink = TraceSummarySink(
        traces,
        buffer_size=settings.summary_buffer,
        batch_size=settings.summary_batch,
        flush_interval_s=settings.summary_flush_interval_s,
    )
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    for processor in exporters:
        provider.add_span_processor(processor)
    provider.add_span_processor(sink)
    return Telemetry(
        provider=provider,
        sink=sink,
        traces=traces,
        exporters=exporters,
        shutdown_timeout_s=settings.shutdown_timeout_s,
        events=events,
    )


def build_events(environ: Mapping[str, str], resource: Resource) -> EvaluationEvents:
    """``EvaluationEvents`` exporting through ``log_exporters(environ)``; a no-op when there are none."""
    exporters = log_exporters(environ)
    if not exporters:
        return EvaluationEvents()
    queue_size = max_queue_size_from_env(environ, _LOG_QUEUE_SIZE)
    batch_size = export_batch_size_from_env(queue_size, environ, _LOG_BATCH_SIZE)
    processors = [
        BoundedBatchLogRecordProcessor(exporter, max_queue_size=queue_size, max_export_batch_size=batch_size)
        for exporter in exporters
    ]
    return EvaluationEvents(processors, resource)


def build_resource() -> Resource:
    """The SDK's resource (``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_SERVICE_NAME``) with our defaults under it."""
    detected = Resource.create()
    defaults: dict[str, str] = {}
    if str(detected.attributes.get(SERVICE_NAME, "unknown_service")).startswith("unknown_service"):
        defaults[SERVICE_NAME] = DEFAULT_SERVICE_NAME
    if SERVICE_VERSION not in detected.attributes:
        defaults[SERVICE_VERSION] = __version__
    return detected.merge(Resource(defaults))


def check_otel_environment(environ: Mapping[str, str] | None = None) -> None:
    """Refuse, before the server binds, ``OTEL_*`` choices the gateway cannot honour (``ConfigError``
    naming the variable); builds nothing. The lifespan checks the rest (the SDK's own combinations)."""
    env = os.environ if environ is None else environ
    for signal in ("traces", "logs"):
        names = _exporter_names(env, signal)
        if "otlp" in names and "none" not in names:
            _otlp_protocol(env, signal)
    max_queue_size_from_env(env)
    max_queue_size_from_env(env, _LOG_QUEUE_SIZE)


def span_exporters(environ: Mapping[str, str]) -> list[SpanExporter]:
    """The exporters ``OTEL_TRACES_EXPORTER`` names; unset means ``otlp`` when an OTLP endpoint is set,
    else none (the embedded default exports nothing)."""
    names = _exporter_names(environ, "traces")
    if "none" in names:
        return []
    exporters: list[SpanExporter] = []
    if "otlp" in names:
        exporters.append(_otlp_exporter(environ))
    if "console" in names:
        exporters.append(ConsoleSpanExporter())
    return exporters


def log_exporters(environ: Mapping[str, str]) -> list[LogRecordExporter]:
    """The exporters ``OTEL_LOGS_EXPORTER`` names; unset means ``otlp`` when an OTLP endpoint is set
    (``OTEL_EXPORTER_OTLP_ENDPOINT``, ``…/v1/logs`` appended, or ``OTEL_EXPORTER_OTLP_LOGS_ENDPOINT``), else none."""
    names = _exporter_names(environ, "logs")
    if "none" in names:
        return []
    exporters: list[LogRecordExporter] = []
    if "otlp" in names:
        exporters.append(_otlp_log_exporter(environ))
    if "console" in names:
        exporters.append(ConsoleLogRecordExporter())
    return exporters


def _exporter_names(environ: Mapping[str, str], signal: str) -> list[str]:
    """``OTEL_TRACES_EXPORTER`` (signal ``traces``) or ``OTEL_LOGS_EXPORTER`` (``logs``), checked."""
    upper = signal.upper()
    variable = f"OTEL_{upper}_EXPORTER"
    endpoint = environ.get(f"OTEL_EXPORTER_OTLP_{upper}_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    names_text = environ.get(variable, "").strip().lower() or ("otlp" if endpoint else "none")
    names = [name.strip() for name in names_text.split(",") if name.strip()]
    unknown = [name for name in names if name not in _EXPORTERS]
    if unknown:
        raise ConfigError(
            f"{variable} (environment): {names_text!r} names unsupported exporter(s) "
            f"{', '.join(unknown)}; expected a comma-separated list of {', '.join(_EXPORTERS)}."
        )
    return names


def _otlp_protocol(environ: Mapping[str, str], signal: str) -> str:
    """``http/protobuf`` or ``grpc`` (only when its exporter package is installed)."""
    specific = f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL"
    variable = specific if environ.get(specific) else "OTEL_EXPORTER_OTLP_PROTOCOL"
    protocol = environ.get(variable, "").strip().lower() or "http/protobuf"
    if protocol == "grpc":
        if importlib.util.find_spec("opentelemetry.exporter.otlp.proto.grpc") is None:
            raise ConfigError(
                f"{variable} (environment): 'grpc' needs the package opentelemetry-exporter-otlp-proto-grpc, "
                "which is not installed; install it or use http/protobuf."
            )
    elif protocol != "http/protobuf":
        raise ConfigError(f"{variable} (environment): {protocol!r} is not supported; expected http/protobuf or grpc.")
    return protocol


def _otlp_exporter(environ: Mapping[str, str]) -> SpanExporter:
    if _otlp_protocol(environ, "traces") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter

        exporter: SpanExporter = GrpcSpanExporter()
        return exporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def _otlp_log_exporter(environ: Mapping[str, str]) -> LogRecordExporter:
    if _otlp_protocol(environ, "logs") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter

        exporter: LogRecordExporter = GrpcLogExporter()
        return exporter
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

    return OTLPLogExporter()
