"""``gen_ai.evaluation.result`` events: every judge's result, also as an OpenTelemetry log record.

The GenAI conventions define an evaluation result as an *event*, and in the Python SDK an event is a
``LogRecord`` with ``event_name`` set (the separate Events API is deprecated). It SHOULD be parented to
the evaluated span, which ended long ago (or lives in another process): the record takes a context
holding ``NonRecordingSpan(SpanContext(trace_id, span_id, is_remote=True))``, so the backend shows the
result on the judged span without us touching that span.

One ``LoggerProvider`` per app, like the ``TracerProvider`` (never the global one), built by
``gateway.telemetry.setup.build_telemetry`` only when logs are exported (``OTEL_LOGS_EXPORTER``, or an
OTLP endpoint); otherwise ``EvaluationEvents`` is a no-op costing one attribute check.

A judge must never wait for telemetry, so ``emit_result`` never raises and never blocks: the record goes
to the SDK's ``BatchLogRecordProcessor`` (export off-thread from a bounded queue), wrapped the way
``gateway.telemetry.export`` wraps the span processor, so every record is accounted for: exported, or
dropped and counted by reason (``queue_full`` when the exporter cannot keep up: the SDK's own queue would
drop its oldest record silently, we drop the new one and count it; ``export_failed``; ``shutdown``;
``error`` when the record could not even be built). ``shutdown`` is bounded.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk._logs import LoggerProvider, LogRecordProcessor, ReadableLogRecord, ReadWriteLogRecord
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from gateway import __version__, metrics
from gateway.config import ConfigError
from gateway.telemetry import semconv as sc
from gateway.telemetry.export import PendingCounter, stop_within

logger = logging.getLogger("gateway.telemetry")

EVENTS_EXPORTED = metrics.counter(
    "gateway_events_exported_total", "OpenTelemetry events (log records) accepted by the OTLP endpoint.", ()
)
EVENTS_DROPPED = metrics.counter(
    "gateway_events_dropped_total",
    "OpenTelemetry events not exported, by reason: queue_full, export_failed, shutdown, error.",
    ("reason",),
)

# The instrumentation scope of the records (what a backend shows as their source).
SCOPE = "gateway.judges"
_HEX = re.compile(r"[0-9a-fA-F]+")


class CountingLogExporter(LogRecordExporter):
    """Delegates to ``inner``; when a batch's export ends, releases its slots and counts its outcome.

    Unlike spans (export.py frees a batch's places when the exporter takes it), a batch holds its places
    until its export ends, so a shutdown that gives up counts the records of an export stuck on a silent
    endpoint too; after ``take_all`` (shutdown counted them as dropped) an export that ends late releases
    none, so no record is counted twice. The price: the queue admits up to one batch fewer while an
    export runs."""

    def __init__(self, inner: LogRecordExporter, pending: PendingCounter) -> None:
        self.inner = inner
        self._pending = pending
        self._inner_shut_down = False
        self._lock = threading.Lock()

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        try:
            result = self.inner.export(batch)
        except Exception:  # an exporter should not raise; count it and keep the worker alive
            logger.exception("Log record exporter %s raised", type(self.inner).__name__)
            result = LogRecordExportResult.FAILURE
        counted = self._pending.release(len(batch))
        if counted:
            if result is LogRecordExportResult.SUCCESS:
                EVENTS_EXPORTED.inc((), counted)
            else:
                EVENTS_DROPPED.inc(("export_failed",), counted)
        return result

    def shutdown(self) -> None:
        # Called by us to abort a slow export, and again by the processor when it stops.
        with self._lock:
            if self._inner_shut_down:
                return
            self._inner_shut_down = True
        self.inner.shutdown()  # type: ignore[no-untyped-call]  # the SDK leaves it unannotated

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class BoundedBatchLogRecordProcessor(LogRecordProcessor):
    """A ``BatchLogRecordProcessor`` that counts what it drops and whose shutdown is bounded.

    ``max_export_batch_size`` None lets the SDK read ``OTEL_BLRP_MAX_EXPORT_BATCH_SIZE``; the SDK reads the
    other ``OTEL_BLRP_*`` variables; a combination it refuses (a batch larger than the queue) is a
    ``ConfigError``.
    """

    def __init__(self, exporter: LogRecordExporter, max_queue_size: int, max_export_batch_size: int | None) -> None:
        self._pending = PendingCounter(max_queue_size)
        self.exporter = CountingLogExporter(exporter, self._pending)
        try:
            self._batch = BatchLogRecordProcessor(
                self.exporter, max_queue_size=max_queue_size, max_export_batch_size=max_export_batch_size
            )
        except ValueError as exc:  # e.g. OTEL_BLRP_MAX_EXPORT_BATCH_SIZE above the queue size
            raise ConfigError(f"OTEL_BLRP_* (environment): {exc}") from None
        self._shut_down = False

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        if self._shut_down:
            EVENTS_DROPPED.inc(("shutdown",))
            return
        if not self._pending.reserve():
            EVENTS_DROPPED.inc(("queue_full",))
            return
        self._batch.on_emit(log_record)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._batch.force_flush(timeout_millis)

    def shutdown(self, timeout_s: float = 5.0) -> None:
        """Export what is queued, for at most ``timeout_s``; then abort the exporter (its retries, and
        leave an export stuck on a silent endpoint to its daemon thread). Returns within ``timeout_s`` + 1 s."""
        if self._shut_down:
            return
        self._shut_down = True
        stop_within(self._batch.shutdown, self.exporter.shutdown, timeout_s, "Event")
        left = self._pending.take_all()
        if left:
            EVENTS_DROPPED.inc(("shutdown",), left)


class EvaluationEvents:
    """Emits ``gen_ai.evaluation.result`` events; a no-op without processors (nothing is exported)."""

    def __init__(
        self, processors: Sequence[BoundedBatchLogRecordProcessor] = (), resource: Resource | None = None
    ) -> None:
        self.processors = tuple(processors)
        self._provider: LoggerProvider | None = None
        self._logged_failure = False
        if self.processors:
            provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
            for processor in self.processors:
                provider.add_log_record_processor(processor)
            self._provider = provider
            self._logger = provider.get_logger(SCOPE, __version__)

    @property
    def enabled(self) -> bool:
        return self._provider is not None

    def emit_result(
        self,
        *,
        name: str,
        trace_id: str | None,
        span_id: str | None,
        score: float | None,
        label: str | None,
        explanation: str | None,
        error_type: str | None,
        response_id: str | None = None,
        attributes: Mapping[str, Any] = {},  # noqa: B006 - read only
    ) -> None:
        """One event for one result, parented to the judged span (``trace_id`` hex 32, ``span_id`` hex 16;
        a trace id alone parents it to the trace; ids absent or malformed: no parent). Attributes that are
        None are left out; the ``gen_ai.evaluation.*`` ones win over same-named keys of ``attributes``.
        Never raises; never blocks (the record is queued for a background thread)."""
        if self._provider is None:
            return
        try:
            values: dict[str, Any] = {key: value for key, value in attributes.items() if value is not None}
            values[sc.GEN_AI_EVALUATION_NAME] = name
            if score is not None:
                values[sc.GEN_AI_EVALUATION_SCORE_VALUE] = float(score)
            if label is not None:
                values[sc.GEN_AI_EVALUATION_SCORE_LABEL] = label
            if explanation is not None:
                values[sc.GEN_AI_EVALUATION_EXPLANATION] = explanation
            if response_id is not None:
                values[sc.GEN_AI_RESPONSE_ID] = response_id
            if error_type is not None:
                values[sc.ERROR_TYPE] = error_type
            self._logger.emit(
                timestamp=time.time_ns(),
                context=parent_context(trace_id, span_id),
                event_name=sc.EVENT_GEN_AI_EVALUATION_RESULT,
                attributes=values,
            )
        except Exception:
            EVENTS_DROPPED.inc(("error",))
            if not self._logged_failure:  # once: a systematic failure must not flood the log
                self._logged_failure = True
                logger.exception("Could not emit a %s event", sc.EVENT_GEN_AI_EVALUATION_RESULT)

    def shutdown(self, timeout_s: float) -> None:
        """Export what is queued, each processor for at most ``timeout_s`` (+ 1 s), then stop. Blocking."""
        for processor in self.processors:
            processor.shutdown(timeout_s)
        if self._provider is not None:
            self._provider.shutdown()  # the processors above are already stopped: this returns at once


def parent_context(trace_id: str | None, span_id: str | None) -> Context:
    """A context whose current span is the (remote, ended) judged span; with no valid trace id, one with
    the invalid span, so the record never picks up whatever span is current in the caller."""
    trace_int = _hex_id(trace_id, 32)
    if not trace_int:
        return trace.set_span_in_context(trace.INVALID_SPAN, Context())
    span_context = SpanContext(
        trace_id=trace_int,
        span_id=_hex_id(span_id, 16),
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    return trace.set_span_in_context(NonRecordingSpan(span_context), Context())


def _hex_id(value: str | None, digits: int) -> int:
    """The id as an int; 0 (invalid) when absent or not ``digits`` hex digits."""
    if not value or len(value) != digits or not _HEX.fullmatch(value):
        return 0
    return int(value, 16)
