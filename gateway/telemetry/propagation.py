"""W3C trace context: the one propagator that reads a client's ``traceparent`` (``/invocations`` and
the LLM proxy's SERVER spans) and writes ours on the proxy's upstream requests."""

from __future__ import annotations

from opentelemetry.trace import Span, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

PROPAGATOR = TraceContextTextMapPropagator()


def trace_headers(span: Span) -> dict[str, str]:
    """``traceparent`` (and ``tracestate``) naming ``span`` as the parent; empty for an invalid span."""
    headers: dict[str, str] = {}
    PROPAGATOR.inject(headers, set_span_in_context(span))
    return headers
