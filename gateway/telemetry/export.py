"""Span export that never slows a request and accounts for every span: exported or dropped, and why.

The SDK's ``BatchSpanProcessor`` already exports off-thread from a bounded queue, but when the queue
is full it drops silently (its own drop counter is an opt-in OTel metric). We keep it and add two
thin wrappers that use only public SDK interfaces:

- ``CountingSpanExporter`` wraps the real exporter: every batch the processor hands it frees that
  many queue slots, and its result counts the spans as exported or dropped (``export_failed``);
- ``BoundedBatchSpanProcessor`` wraps the ``BatchSpanProcessor`` and counts the spans it has queued
  but the exporter has not yet taken. That count is never below the real queue length, so when it
  reaches ``max_queue_size`` we drop the span ourselves (``queue_full``) before the SDK would have
  to: its queue never overflows, and each drop is counted exactly once.

Spans still queued when shutdown gives up are counted as ``shutdown``. So, for sampled spans:
ended = exported + dropped (all reasons) + still queued.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from gateway import metrics
from gateway.config import ConfigError

logger = logging.getLogger("gateway.telemetry")

SPANS_EXPORTED = metrics.counter("gateway_spans_exported_total", "Spans accepted by the OTLP endpoint.", ())
SPANS_DROPPED = metrics.counter(
    "gateway_spans_dropped_total",
    "Spans not exported, by reason: queue_full (exporter too slow or down), export_failed, shutdown.",
    ("reason",),
)

# The SDK's default for OTEL_BSP_MAX_QUEUE_SIZE.
DEFAULT_MAX_QUEUE_SIZE = 2048
# Ours for OTEL_BSP_MAX_EXPORT_BATCH_SIZE (the SDK's is 512). The exporter thread encodes a batch in pure
# Python holding the GIL, so the event loop waits for the whole batch: with 32, the paced p99 of
# `make bench-llm` matched OTEL_TRACES_EXPORTER=none, with 512 it was far higher (docs/benchmarks.md,
# "Stalls (p99) came from span export").
DEFAULT_MAX_EXPORT_BATCH_SIZE = 32


class CountingSpanExporter(SpanExporter):
    """Delegates to ``inner``; reports each batch taken off the queue and counts the outcome."""

    def __init__(self, inner: SpanExporter, on_taken: Callable[[int], object] | None = None) -> None:
        self.inner = inner
        self._on_taken = on_taken
        self._inner_shut_down = False
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        count = len(spans)
        if self._on_taken is not None:
            self._on_taken(count)
        try:
            result = self.inner.export(spans)
        except Exception:  # an exporter must not raise; count it and keep the worker alive
            logger.exception("Span exporter %s raised", type(self.inner).__name__)
            result = SpanExportResult.FAILURE
        if result is SpanExportResult.SUCCESS:
            SPANS_EXPORTED.inc((), count)
        else:
            SPANS_DROPPED.inc(("export_failed",), count)
        return result

    def shutdown(self) -> None:
        # Called by us to abort a slow export, and again by the processor when it stops.
        with self._lock:
            if self._inner_shut_down:
                return
            self._inner_shut_down = True
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class PendingCounter:
    """Records handed to a batch processor and not yet released (spans: once the exporter takes them;
    events, gateway/telemetry/events.py: once their export ends): the queue's places, bounded."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.value = 0
        self._lock = threading.Lock()

    def reserve(self) -> bool:
        with self._lock:
            if self.value >= self.capacity:
                return False
            self.value += 1
            return True

    def release(self, count: int) -> int:
        """Free up to ``count`` places; returns how many were held (none after ``take_all``)."""
        with self._lock:
            released = min(count, self.value)
            self.value -= released
            return released

    def take_all(self) -> int:
        with self._lock:
            value, self.value = self.value, 0
            return value


class BoundedBatchSpanProcessor(SpanProcessor):
    """A ``BatchSpanProcessor`` that counts what it drops (see the module docstring).

    ``max_queue_size`` defaults to ``OTEL_BSP_MAX_QUEUE_SIZE`` (read here, since we need its value, and
    refused with ``ConfigError`` when it is not a positive integer); ``max_export_batch_size`` to
    ``export_batch_size_from_env`` (the SDK reads ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE`` when that is set).
    The SDK reads the other ``OTEL_BSP_*`` variables, and a combination it refuses (a batch larger than
    the queue) is a ``ConfigError`` too.
    """

    def __init__(
        self, exporter: SpanExporter, max_queue_size: int | None = None, max_export_batch_size: int | None = None
    ) -> None:
        if max_queue_size is None:
            max_queue_size = max_queue_size_from_env()
        if max_export_batch_size is None:
            max_export_batch_size = export_batch_size_from_env(max_queue_size)
        self._pending = PendingCounter(max_queue_size)
        self.exporter = CountingSpanExporter(exporter, on_taken=self._pending.release)
        try:
            self._batch = BatchSpanProcessor(
                self.exporter, max_queue_size=max_queue_size, max_export_batch_size=max_export_batch_size
            )
        except ValueError as exc:  # e.g. OTEL_BSP_MAX_EXPORT_BATCH_SIZE above the queue size
            raise ConfigError(f"OTEL_BSP_* (environment): {exc}") from None
        self._shut_down = False

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        if not (span.context and span.context.trace_flags.sampled):
            return
        if self._shut_down:
            SPANS_DROPPED.inc(("shutdown",))
            return
        if not self._pending.reserve():
            SPANS_DROPPED.inc(("queue_full",))
            return
        self._batch.on_end(span)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._batch.force_flush(timeout_millis)

    def shutdown(self, timeout_s: float = 5.0) -> None:
        """Export what is queued, for at most ``timeout_s``; then abort the exporter's retries."""
        if self._shut_down:
            return
        self._shut_down = True
        stop_within(self._batch.shutdown, self.exporter.shutdown, timeout_s, "Span")
        left = self._pending.take_all()
        if left:
            SPANS_DROPPED.inc(("shutdown",), left)


def stop_within(stop: Callable[[], object], abort: Callable[[], object], timeout_s: float, what: str) -> None:
    """Run ``stop`` (a batch processor's shutdown: export what is queued) for at most ``timeout_s``; past
    that, ``abort`` the exporter (which interrupts its retry backoff: queued batches then fail at once, and
    an export stuck on a silent endpoint is left to its daemon thread) and wait 1 s more."""
    stopper = threading.Thread(target=stop, name=f"otel-{what.lower()}-export-shutdown", daemon=True)
    stopper.start()
    stopper.join(timeout_s)
    if stopper.is_alive():
        logger.warning("%s export did not finish within %.1f s at shutdown; dropping the rest", what, timeout_s)
        abort()
        stopper.join(1.0)


def export_batch_size_from_env(
    max_queue_size: int, environ: Mapping[str, str] | None = None, variable: str = "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"
) -> int | None:
    """None (the SDK reads and checks the variable) when ``variable`` is set (logs: ``OTEL_BLRP_...``);
    else our default, never above the queue size."""
    env = os.environ if environ is None else environ
    if env.get(variable, "").strip():
        return None
    return min(DEFAULT_MAX_EXPORT_BATCH_SIZE, max_queue_size)


def max_queue_size_from_env(environ: Mapping[str, str] | None = None, variable: str = "OTEL_BSP_MAX_QUEUE_SIZE") -> int:
    """``variable`` (logs: ``OTEL_BLRP_MAX_QUEUE_SIZE``) as a positive integer, or the SDK's default."""
    env = os.environ if environ is None else environ
    text = env.get(variable, "").strip()
    if not text:
        return DEFAULT_MAX_QUEUE_SIZE
    try:
        size = int(text)
    except ValueError:
        size = 0
    if size <= 0:
        raise ConfigError(f"{variable} (environment): {text!r} is not a positive integer.")
    return size
