"""Spans of a proxied call: one SERVER span per request, one CLIENT span per upstream attempt.

The SERVER span continues the client's W3C ``traceparent`` and, at its end, carries the call's
summary (route, final target, attempts, usage, ...): the trace store's sink reads only the spans
that have ``gateway.llm.route``. An in-process call (``LlmProxy.complete``: a judge's) has an
INTERNAL span in that place, the root of a trace of its own, linked to the spans it is about.
CLIENT spans follow the GenAI inference span conventions, and their context is what the upstream
receives as ``traceparent``.

The tracer comes from the provider ``create_app`` hands the proxy (never the global one).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.context import Context
from opentelemetry.trace import (
    Link,
    Span,
    SpanKind,
    Status,
    StatusCode,
    TracerProvider,
    set_span_in_context,
)

from gateway.llm.answer import AnswerSummary
from gateway.llm.request_body import Operation, ParsedCall
from gateway.llm.routes_config import Target
from gateway.telemetry import semconv as sc
from gateway.telemetry.propagation import PROPAGATOR

COMPLETE_SPAN_PREFIX = "gateway.complete"  # the in-process call's span: "gateway.complete chat"


class ProxySpans:
    """Starts and ends the proxy's spans; every attribute name comes from ``semconv``."""

    def __init__(self, tracer_provider: TracerProvider) -> None:
        self._tracer = tracer_provider.get_tracer("gateway.llm")

    def start_server(self, operation: Operation, path: str, headers: Mapping[str, str]) -> Span:
        parent: Context | None = None
        if "traceparent" in headers:
            parent = PROPAGATOR.extract(headers)
        return self._tracer.start_span(
            operation.span_name,
            context=parent,
            kind=SpanKind.SERVER,
            attributes={sc.HTTP_REQUEST_METHOD: operation.method, sc.URL_PATH: path},
        )

    def start_internal(self, operation: Operation, attributes: Mapping[str, Any], links: Sequence[Link]) -> Span:
        """The top span of an in-process call: a new trace (never the caller's current span as parent)."""
        return self._tracer.start_span(
            f"{COMPLETE_SPAN_PREFIX} {operation.name}",
            context=Context(),
            kind=SpanKind.INTERNAL,
            attributes=attributes,
            links=links,
        )

    def start_client(self, server_span: Span, call: ParsedCall, target: Target, attempt: int, fallback: bool) -> Span:
        operation = call.operation
        attributes: dict[str, Any] = {
            sc.GEN_AI_OPERATION_NAME: operation.name,
            sc.GEN_AI_PROVIDER_NAME: target.provider,
            sc.GEN_AI_REQUEST_MODEL: target.model,
            sc.SERVER_ADDRESS: target.host,
            sc.SERVER_PORT: target.port,
            sc.GATEWAY_LLM_ATTEMPT: attempt,
            sc.GATEWAY_LLM_FALLBACK: fallback,
        }
        attributes.update(call.request_attributes())
        return self._tracer.start_span(
            f"{operation.name} {target.model}",
            context=set_span_in_context(server_span),
            kind=SpanKind.CLIENT,
            attributes=attributes,
        )


def end_failed(span: Span, error_type: str, message: str) -> None:
    span.set_attribute(sc.ERROR_TYPE, error_type)
    span.set_status(Status(StatusCode.ERROR, message))
    span.end()


def answer_attributes(
    summary: AnswerSummary, time_to_first_chunk_s: float | None, content: Mapping[str, Any] | None
) -> dict[str, Any]:
    """A CLIENT span's attributes from its upstream's answer (and the captured messages, if any)."""
    attributes = summary.attributes()
    if time_to_first_chunk_s is not None:
        attributes[sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] = time_to_first_chunk_s
    if content:
        attributes.update(content)
    return attributes


def end_answered(
    span: Span,
    attributes: Mapping[str, Any],
    *,
    error_type: str | None,
    error_message: str | None = None,
    end_time: int | None = None,
) -> None:
    """End a CLIENT span whose upstream answered (successfully, or with a status the client gets as is)
    with ``attributes`` (``answer_attributes``); ``end_time`` (ns since the epoch) when the answer
    arrived before this call."""
    span.set_attributes(attributes)
    if error_type is not None:
        span.set_attribute(sc.ERROR_TYPE, error_type)
        span.set_status(Status(StatusCode.ERROR, error_message or error_type))
    span.end(end_time)


def end_server(
    span: Span,
    status: int,
    summary_attributes: Mapping[str, Any],
    *,
    error_type: str | None,
    error_message: str | None = None,
) -> None:
    """End the SERVER span with the call's summary; 5xx answers mark it as an error."""
    span.set_attributes(summary_attributes)
    span.set_attribute(sc.HTTP_RESPONSE_STATUS_CODE, status)
    if error_type is not None:
        span.set_attribute(sc.ERROR_TYPE, error_type)
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR, error_message or error_type))
    span.end()
