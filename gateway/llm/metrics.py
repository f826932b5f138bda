"""The proxy's metrics (GenAI client inference metrics in Prometheus form, plus retries and fallbacks).

One ``record_attempt`` per upstream call: a handful of dict updates, the cost the hot path pays.
Labels are the operation, the provider, the upstream model and the route; durations add error.type.
"""

from __future__ import annotations

from gateway import metrics
from gateway.llm.answer import AnswerSummary
from gateway.telemetry import semconv as sc

# OTel advisory buckets: seconds 0.01 doubling to 81.92; tokens 1, 4, 16, ... 67,108,864.
DURATION_BUCKETS: tuple[float, ...] = tuple(round(0.01 * 2**i, 2) for i in range(14))
TOKEN_BUCKETS: tuple[float, ...] = tuple(float(4**i) for i in range(14))

_CALL_LABELS = (sc.LABEL_OPERATION, sc.LABEL_PROVIDER, sc.LABEL_REQUEST_MODEL, sc.LABEL_ROUTE)
CallLabels = tuple[str, str, str, str]

DURATION = metrics.histogram(
    sc.METRIC_INFERENCE_DURATION,
    "Duration of each upstream LLM call (gen_ai.client.inference.duration), seconds.",
    (*_CALL_LABELS, sc.LABEL_ERROR_TYPE),
    buckets=DURATION_BUCKETS,
)
TIME_TO_FIRST_CHUNK = metrics.histogram(
    sc.METRIC_TIME_TO_FIRST_CHUNK,
    "Time from the upstream request to its first streamed chunk (gen_ai.client.inference.time_to_first_chunk).",
    _CALL_LABELS,
    buckets=DURATION_BUCKETS,
)
INPUT_TOKENS = metrics.counter(
    sc.METRIC_USAGE_INPUT_TOKENS,
    "Input tokens reported by upstreams (gen_ai.client.inference.usage.input_tokens).",
    (*_CALL_LABELS, sc.LABEL_TOKEN_MODALITY),
)
OUTPUT_TOKENS = metrics.counter(
    sc.METRIC_USAGE_OUTPUT_TOKENS,
    "Output tokens reported by upstreams (gen_ai.client.inference.usage.output_tokens).",
    (*_CALL_LABELS, sc.LABEL_TOKEN_MODALITY),
)
CACHE_READ_TOKENS = metrics.counter(
    sc.METRIC_USAGE_CACHE_READ_INPUT_TOKENS,
    "Input tokens served from the provider's prompt cache (gen_ai.client.inference.usage.cache_read.input_tokens).",
    (*_CALL_LABELS, sc.LABEL_TOKEN_MODALITY),
)
CACHE_WRITE_TOKENS = metrics.counter(
    sc.METRIC_USAGE_CACHE_WRITE_INPUT_TOKENS,
    "Input tokens written to the provider's prompt cache (gen_ai.client.inference.usage.cache_write.input_tokens).",
    (*_CALL_LABELS, sc.LABEL_TOKEN_MODALITY),
)
REASONING_TOKENS = metrics.counter(
    sc.METRIC_USAGE_REASONING_OUTPUT_TOKENS,
    "Reasoning tokens within the output (gen_ai.client.inference.usage.reasoning.output_tokens).",
    (*_CALL_LABELS, sc.LABEL_TOKEN_MODALITY),
)
OPERATION_INPUT_TOKENS = metrics.histogram(
    sc.METRIC_OPERATION_INPUT_TOKENS,
    "Input tokens per upstream call (gen_ai.client.inference.operation.input_tokens).",
    _CALL_LABELS,
    buckets=TOKEN_BUCKETS,
)
OPERATION_OUTPUT_TOKENS = metrics.histogram(
    sc.METRIC_OPERATION_OUTPUT_TOKENS,
    "Output tokens per upstream call (gen_ai.client.inference.operation.output_tokens).",
    _CALL_LABELS,
    buckets=TOKEN_BUCKETS,
)
UPSTREAM_ERRORS = metrics.counter(
    sc.METRIC_UPSTREAM_ERRORS,
    "Failed upstream calls by route, provider and error.type (an HTTP status or an exception name).",
    (sc.LABEL_ROUTE, sc.LABEL_PROVIDER, sc.LABEL_ERROR_TYPE),
)
RETRIES = metrics.counter(sc.METRIC_RETRIES, "Upstream calls retried on the same target.", (sc.LABEL_ROUTE,))
FALLBACKS = metrics.counter(sc.METRIC_FALLBACKS, "Calls that moved on to the next target.", (sc.LABEL_ROUTE,))
REQUESTS = metrics.counter(
    sc.METRIC_REQUESTS,
    "LLM proxy requests by route and HTTP status (route is empty when it was not known).",
    (sc.LABEL_ROUTE, sc.LABEL_STATUS),
)


def record_attempt(
    labels: CallLabels,
    duration_s: float,
    error_type: str | None,
    summary: AnswerSummary | None,
    time_to_first_chunk_s: float | None = None,
) -> None:
    """One upstream call, successful or not (a failed one counts zero tokens of unknown modality)."""
    DURATION.observe((*labels, error_type or ""), duration_s)
    if time_to_first_chunk_s is not None:
        TIME_TO_FIRST_CHUNK.observe(labels, time_to_first_chunk_s)
    if error_type is not None:
        UPSTREAM_ERRORS.inc((labels[3], labels[1], error_type))
    input_tokens = summary.input_tokens if summary is not None else None
    output_tokens = summary.output_tokens if summary is not None else None
    if input_tokens is None:
        INPUT_TOKENS.inc((*labels, sc.TOKEN_MODALITY_UNKNOWN), 0.0)
    else:
        INPUT_TOKENS.inc((*labels, sc.TOKEN_MODALITY_TEXT), input_tokens)
        OPERATION_INPUT_TOKENS.observe(labels, input_tokens)
    if output_tokens is None:
        OUTPUT_TOKENS.inc((*labels, sc.TOKEN_MODALITY_UNKNOWN), 0.0)
    else:
        OUTPUT_TOKENS.inc((*labels, sc.TOKEN_MODALITY_TEXT), output_tokens)
        OPERATION_OUTPUT_TOKENS.observe(labels, output_tokens)
    if summary is not None:
        if summary.cache_read_tokens is not None:
            CACHE_READ_TOKENS.inc((*labels, sc.TOKEN_MODALITY_TEXT), summary.cache_read_tokens)
        if summary.cache_write_tokens is not None:
            CACHE_WRITE_TOKENS.inc((*labels, sc.TOKEN_MODALITY_TEXT), summary.cache_write_tokens)
        if summary.reasoning_tokens is not None:
            REASONING_TOKENS.inc((*labels, sc.TOKEN_MODALITY_TEXT), summary.reasoning_tokens)


def record_upstream_error(labels: CallLabels, error_type: str) -> None:
    """A failed upstream call that is not inference (a follow-up, a token count): no inference metrics."""
    UPSTREAM_ERRORS.inc((labels[3], labels[1], error_type))


def record_retry(route: str) -> None:
    RETRIES.inc((route,))


def record_fallback(route: str) -> None:
    FALLBACKS.inc((route,))


def record_request(route: str, status: int) -> None:
    REQUESTS.inc((route, str(status)))
