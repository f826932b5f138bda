"""SERVER spans for ``/invocations`` requests, continuing a client's W3C ``traceparent``.

The serving path is the product's hottest (an iris request costs microseconds of CPU:
docs/benchmarks.md), so the endpoint only calls ``trace_invocation`` when
``app.state.trace_invocations`` is true, which it is only when spans are exported somewhere: with
no OTLP endpoint a request does no span work at all.

Attributes: ``gateway.model.name``, ``gateway.model.version`` (from the answer's ``X-Model-*``
headers, once the reference is resolved), ``gateway.request.rows`` (set by the model once the body
is parsed: the span is handed over in the ASGI scope under :data:`SPAN_SCOPE_KEY`), the HTTP method,
route and status, and ``error.type`` (the status code) for a 5xx.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from starlette.requests import Request
from starlette.responses import Response

from gateway.refs import ModelRef
from gateway.telemetry import semconv as sc
from gateway.telemetry.propagation import PROPAGATOR

TRACER_NAME = "gateway.serving"
# Where the request's SERVER span waits in the ASGI scope for the endpoint to describe the request.
SPAN_SCOPE_KEY = "gateway.span"

Invoke = Callable[[Request, ModelRef], Awaitable[Response]]


async def trace_invocation(request: Request, ref: ModelRef, invoke: Invoke) -> Response:
    """``await invoke(request, ref)`` inside a SERVER span of the app's tracer provider."""
    tracer: Tracer = request.app.state.invocation_tracer
    route = request.scope.get("route")
    http_route = getattr(route, "path", None) or request.url.path
    parent = PROPAGATOR.extract(request.headers)
    span = tracer.start_span(
        f"{request.method} {http_route}",
        context=parent,
        kind=SpanKind.SERVER,
        attributes={
            sc.HTTP_REQUEST_METHOD: request.method,
            sc.HTTP_ROUTE: http_route,
            sc.URL_PATH: request.url.path,
            sc.GATEWAY_MODEL_NAME: ref.name,
        },
    )
    token = otel_context.attach(trace.set_span_in_context(span, parent))
    request.scope[SPAN_SCOPE_KEY] = span
    try:
        response = await invoke(request, ref)
    except BaseException as exc:
        span.set_attribute(sc.ERROR_TYPE, type(exc).__qualname__)
        span.set_status(Status(StatusCode.ERROR, str(exc)[:200]))
        raise
    else:
        _describe_response(span, response, ref)
        return response
    finally:
        otel_context.detach(token)
        span.end()


def _describe_response(span: trace.Span, response: Response, ref: ModelRef) -> None:
    status = response.status_code
    span.set_attribute(sc.HTTP_RESPONSE_STATUS_CODE, status)
    version = response.headers.get("x-model-version")
    if version is not None and version.isascii() and version.isdigit():
        span.set_attribute(sc.GATEWAY_MODEL_VERSION, int(version))
    elif ref.version is not None:
        span.set_attribute(sc.GATEWAY_MODEL_VERSION, ref.version)
    if status >= 500:
        span.set_attribute(sc.ERROR_TYPE, str(status))
        span.set_status(Status(StatusCode.ERROR))
