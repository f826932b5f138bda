"""The trace-summary sink: a ``SpanProcessor`` that turns each LLM call's top span into a row of
``trace_summaries``, written in batches by one background thread, never on the request path.

``on_end`` (on the thread that ended the span) only appends the finished span to a bounded buffer;
converting it to a row and writing happen in the writer thread. When the store is slow or down the
buffer fills, and further summaries are dropped and counted rather than held in memory without
bound. The writer retries a failed batch with exponential backoff and logs once per outage; a batch
the database refuses for its content (not for being unreachable) is retried row by row, and only the
refused rows are dropped.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections import deque
from typing import Any

import orjson
import sqlalchemy as sa
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import SpanKind, StatusCode

from gateway import metrics
from gateway.error_text import first_line
from gateway.errors import DependencyError
from gateway.store.traces import COLUMN_LENGTHS, TraceStore
from gateway.telemetry import semconv as sc

logger = logging.getLogger("gateway.telemetry")

SUMMARIES_WRITTEN = metrics.counter(
    "gateway_trace_summaries_written_total", "LLM call summaries written to the trace store.", ()
)
SUMMARIES_DROPPED = metrics.counter(
    "gateway_trace_summaries_dropped_total",
    "LLM call summaries not written, by reason: buffer_full (store slow or down), rejected, shutdown.",
    ("reason",),
)

_BACKOFF_START_S = 0.1
_BACKOFF_MAX_S = 5.0

# Span attribute -> trace_summaries column (the rest go to the ``attributes`` JSON column).
_TEXT_COLUMNS = {
    sc.GATEWAY_LLM_ROUTE: "route",
    sc.GATEWAY_LLM_TARGET: "target",
    sc.GEN_AI_PROVIDER_NAME: "provider",
    sc.GEN_AI_REQUEST_MODEL: "request_model",
    sc.GEN_AI_RESPONSE_MODEL: "response_model",
    sc.ERROR_TYPE: "error_type",
    sc.GATEWAY_AUTH_KEY_ID: "key_id",
    sc.GEN_AI_PROMPT_NAME: "prompt_name",
    sc.GEN_AI_INPUT_MESSAGES: "input_content",
    sc.GEN_AI_OUTPUT_MESSAGES: "output_content",
}
_INT_COLUMNS = {
    sc.HTTP_RESPONSE_STATUS_CODE: "status_code",
    sc.GEN_AI_USAGE_INPUT_TOKENS: "input_tokens",
    sc.GEN_AI_USAGE_OUTPUT_TOKENS: "output_tokens",
    sc.GEN_AI_PROMPT_VERSION: "prompt_version",
}
# MLflow's copies of the captured content (gateway/llm/content.py): input_content and output_content hold it.
_COPIES = (sc.MLFLOW_SPAN_INPUTS, sc.MLFLOW_SPAN_OUTPUTS)
# Attribute names that may carry a credential are never stored (the patterns logfire scrubs).
_SECRET_NAME = re.compile(
    r"password|passwd|secret|auth(?!ors?\b)|credential|private[._ -]?key|api[._ -]?key|session|cookie|"
    r"csrf|xsrf|jwt|bearer",
    re.IGNORECASE,
)
_NEVER_STORED_PREFIXES = ("http.request.header.", "http.response.header.")
_NEVER_STORED = frozenset({"url.full", "url.query"})


def is_llm_summary_span(span: ReadableSpan) -> bool:
    """An LLM call's top span, the one carrying ``gateway.llm.route``: the proxy's SERVER span, or the
    INTERNAL span of an in-process call (``LlmProxy.complete``: a judge's)."""
    kind = span.kind
    if kind is not SpanKind.SERVER and kind is not SpanKind.INTERNAL:
        return False
    attributes = span.attributes
    return attributes is not None and sc.GATEWAY_LLM_ROUTE in attributes


def summary_row(span: ReadableSpan) -> dict[str, Any]:
    """The ``trace_summaries`` row for one LLM call's SERVER span."""
    attributes = dict(span.attributes or {})
    context = span.context
    start = span.start_time or 0
    end = span.end_time or start
    row: dict[str, Any] = {
        "trace_id": format(context.trace_id, "032x") if context else "0" * 32,
        "span_id": format(context.span_id, "016x") if context else "0" * 16,
        "started_at": start // 1_000_000,
        "duration_ms": (end - start) / 1e6,
        "time_to_first_chunk_ms": None,
        "operation": _text(attributes.pop(sc.GEN_AI_OPERATION_NAME, None), "operation") or "unknown",
        "stream": attributes.pop(sc.GEN_AI_REQUEST_STREAM, False) is True,
    }
    first_chunk_s = attributes.pop(sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK, None)
    if isinstance(first_chunk_s, int | float) and not isinstance(first_chunk_s, bool):
        row["time_to_first_chunk_ms"] = float(first_chunk_s) * 1000.0
    for name, column in _TEXT_COLUMNS.items():
        row[column] = _text(attributes.pop(name, None), column)
    for name, column in _INT_COLUMNS.items():
        row[column] = _int(attributes.pop(name, None))
    for name in _COPIES:
        attributes.pop(name, None)
    # The cost stays in the attributes JSON too (where readers found it before it was a column).
    cost = attributes.get(sc.GATEWAY_USAGE_COST_USD)
    row["cost_usd"] = float(cost) if isinstance(cost, int | float) and not isinstance(cost, bool) else None
    if row["error_type"] is None and span.status.status_code is StatusCode.ERROR:
        row["error_type"] = "_OTHER"  # the semconv fallback when no better error type is known
    row["attributes"] = orjson.dumps(
        {name: value for name, value in attributes.items() if _storable(name)}, option=orjson.OPT_NON_STR_KEYS
    ).decode()
    return row


def _storable(name: str) -> bool:
    return not (name in _NEVER_STORED or name.startswith(_NEVER_STORED_PREFIXES) or _SECRET_NAME.search(name))


def _text(value: Any, column: str) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    limit = COLUMN_LENGTHS.get(column)
    return text[:limit] if limit is not None else text


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        return int(value)
    return None


def _is_transient(exc: BaseException) -> bool:
    """Unreachable or overloaded (retry the batch) rather than refusing the rows themselves."""
    if isinstance(exc, sa.exc.DBAPIError):
        return bool(exc.connection_invalidated) or isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError)
    return isinstance(exc, DependencyError | sa.exc.DisconnectionError | sa.exc.TimeoutError | OSError)


class TraceSummarySink(SpanProcessor):
    """Keeps the LLM proxy's SERVER spans and writes their summaries to ``store`` in batches.

    ``buffer_size`` bounds the spans waiting to be written; ``batch_size`` is the most rows per
    insert; the writer also wakes every ``flush_interval_s`` to write a partial batch.
    """

    def __init__(
        self,
        store: TraceStore,
        *,
        buffer_size: int = 10_000,
        batch_size: int = 500,
        flush_interval_s: float = 1.0,
    ) -> None:
        self._store = store
        self._capacity = buffer_size
        self._batch_size = batch_size
        self._flush_interval_s = flush_interval_s
        self._buffer: deque[ReadableSpan] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._abort = threading.Event()
        self._closed = False
        self._writing = 0  # rows taken from the buffer and not yet written or dropped
        self._outage_since: float | None = None
        self._dropped_full = 0  # buffer_full drops so far, and their number at the last successful write
        self._dropped_full_at_success = 0
        self._thread = threading.Thread(target=self._run, name="trace-summary-writer", daemon=True)
        self._thread.start()

    # -- SpanProcessor: called on the thread that ends a span, so it must not block ------------

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        if not is_llm_summary_span(span):
            return
        full_batch = False
        with self._lock:
            if self._closed:
                reason: str | None = "shutdown"
            elif len(self._buffer) >= self._capacity:
                reason = "buffer_full"
                self._dropped_full += 1
            else:
                reason = None
                self._buffer.append(span)
                full_batch = len(self._buffer) >= self._batch_size
        if reason is not None:
            SUMMARIES_DROPPED.inc((reason,))
        elif full_batch:
            self._wake.set()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Wait until every summary buffered so far is written (or dropped); False on timeout."""
        deadline = time.monotonic() + timeout_millis / 1000
        self._wake.set()
        while time.monotonic() < deadline:
            with self._lock:
                if not self._buffer and not self._writing:
                    return True
            self._wake.set()
            time.sleep(0.01)
        return False

    def shutdown(self, timeout_s: float = 5.0) -> None:
        """Write what is buffered, for at most ``timeout_s``; what is left is dropped and counted."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            logger.warning("Trace summaries not all written within %.1f s at shutdown; dropping the rest", timeout_s)
            self._abort.set()
            self._thread.join(1.0)
        with self._lock:
            left = len(self._buffer)
            self._buffer.clear()
        if left:
            SUMMARIES_DROPPED.inc(("shutdown",), left)

    # -- the writer thread ------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wake.wait(self._flush_interval_s)
            self._wake.clear()
            while (batch := self._take_batch()) is not None:
                try:
                    self._write(batch)
                finally:
                    with self._lock:
                        self._writing = 0
            if self._stopping.is_set():
                return

    def _take_batch(self) -> list[ReadableSpan] | None:
        with self._lock:
            if not self._buffer:
                return None
            count = min(self._batch_size, len(self._buffer))
            batch = [self._buffer.popleft() for _ in range(count)]
            self._writing = count
            return batch

    def _write(self, spans: list[ReadableSpan]) -> None:
        rows: list[dict[str, Any]] = []
        for span in spans:
            try:
                rows.append(summary_row(span))
            except Exception:  # a span we cannot summarise must not stop the others
                logger.exception("Could not summarise span %s", span.name)
                SUMMARIES_DROPPED.inc(("rejected",))
        self._insert_with_retry(rows)

    def _insert_with_retry(self, rows: list[dict[str, Any]]) -> None:
        delay = _BACKOFF_START_S
        while rows:
            if self._abort.is_set():
                SUMMARIES_DROPPED.inc(("shutdown",), len(rows))
                return
            try:
                written = self._store.insert_many(rows)
            except Exception as exc:
                if not _is_transient(exc):
                    self._reject(rows, exc)
                    return
                self._note_outage(exc)
                if self._abort.wait(delay * random.uniform(0.8, 1.2)):
                    continue  # the check at the top drops the batch
                delay = min(delay * 2, _BACKOFF_MAX_S)
                continue
            SUMMARIES_WRITTEN.inc((), written)
            self._note_recovered()
            return

    def _reject(self, rows: list[dict[str, Any]], exc: Exception) -> None:
        if len(rows) == 1:
            logger.error("Trace store refused the summary of trace %s: %s", rows[0]["trace_id"], first_line(exc))
            SUMMARIES_DROPPED.inc(("rejected",))
            return
        for row in rows:  # find the refused rows; the others are written
            self._insert_with_retry([row])

    def _note_outage(self, exc: Exception) -> None:
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            logger.warning(
                "Trace store unavailable, retrying; up to %d trace summaries wait in memory and more are "
                "dropped (gateway_trace_summaries_dropped_total): %s",
                self._capacity,
                first_line(exc),
            )

    def _note_recovered(self) -> None:
        with self._lock:
            # Drops since the last successful write: the buffer may fill before a write first fails.
            dropped = self._dropped_full - self._dropped_full_at_success
            self._dropped_full_at_success = self._dropped_full
        if self._outage_since is None:
            return
        logger.warning(
            "Trace store reachable again after %.1f s; %d trace summaries were dropped meanwhile",
            time.monotonic() - self._outage_since,
            dropped,
        )
        self._outage_since = None
