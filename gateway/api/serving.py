"""The MLflow scoring protocol: POST /invocations and the per-model variants."""

from __future__ import annotations

import logging
import math
from time import monotonic

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Scope

from gateway import metrics
from gateway.errors import BadRequest, GatewayError, ModelPredictError, NotFound
from gateway.http import JSON_OPTIONS, RawJSONResponse, error_response, read_raw_body
from gateway.refs import ModelRef, parse_model_ref, parse_version, validate_model_name
from gateway.serving.batcher import REJECTIONS
from gateway.serving.model import LoadedModel
from gateway.state import GatewayState
from gateway.telemetry.invocations import SPAN_SCOPE_KEY, trace_invocation

logger = logging.getLogger("gateway.serving")

REQUESTS = metrics.counter(
    "gateway_requests_total", "/invocations requests answered by a loaded model version, by HTTP status.",
    ("model", "version", "status"),
)  # fmt: skip
DURATION = metrics.histogram(
    "gateway_request_duration_seconds", "/invocations time from routing to the answer, by model version.",
    ("model", "version"), buckets=metrics.LATENCY_BUCKETS,
)  # fmt: skip
TIMEOUT_HEADER = "X-Request-Timeout-Ms"
_TIMEOUT_HEADER_KEY = TIMEOUT_HEADER.lower().encode("latin-1")


async def _invoke(request: Request, ref: ModelRef) -> Response:
    # A SERVER span only when spans are exported (app.state.trace_invocations); else no span work at all.
    if request.app.state.trace_invocations:
        return await trace_invocation(request, ref, _invoke_model)
    return await _invoke_model(request, ref)


async def _invoke_model(request: Request, ref: ModelRef) -> Response:
    started = monotonic()
    state: GatewayState = request.app.state.gateway
    pool = state.pool
    model = pool.get_loaded(ref)
    if model is None:
        try:
            model = await pool.get(ref)
        except GatewayError as exc:
            return error_response(exc)
    # One pass over the raw headers (ASGI lowercases their names) finds the three headers we read.
    content_type = timeout_header = content_length = None
    for key, value in request.scope["headers"]:
        if key == b"content-type":
            if content_type is None:
                content_type = value.decode("latin-1")
        elif key == b"content-length":
            if content_length is None:
                content_length = value
        elif key == _TIMEOUT_HEADER_KEY:
            timeout_header = value
    pool.acquire(model)
    try:
        timeout_s = None if timeout_header is None else _timeout_s(timeout_header)
        body = await read_raw_body(request.receive, content_length, state.settings.serving.max_body_bytes)
        prediction, unwrapped = await model.invoke(
            body, content_type, started=started, timeout_s=timeout_s, span=request.scope.get(SPAN_SCOPE_KEY)
        )
    except GatewayError as exc:
        if exc.status >= 500 and exc.status not in (503, 504):
            logger.error(
                "%s on model %s version %s: %s", exc.error_code, model.name, model.version, exc.message
            )
        _count_error(model, exc, started)
        return error_response(exc, model.headers)
    except ClientDisconnect:
        # The client left before sending its whole body: nobody reads this answer.
        REQUESTS.inc((model.name, str(model.version), "499"))
        return Response(status_code=499)
    finally:
        pool.release(model)
    content = prediction if unwrapped else {"predictions": prediction}
    response = RawJSONResponse(orjson.dumps(content, option=JSON_OPTIONS), model.raw_headers)
    REQUESTS.inc(model.ok_labels)
    DURATION.observe(model.metric_labels, monotonic() - started)
    return response


def _timeout_s(value: bytes) -> float:
    """The client's deadline from ``X-Request-Timeout-Ms`` (it may only shorten the server's)."""
    text = value.decode("latin-1").strip()
    try:
        ms = float(text)
    except ValueError:
        ms = math.nan
    if not (0 < ms < math.inf):
        raise BadRequest(f"Header {TIMEOUT_HEADER} must be a positive number of milliseconds, got {text!r}.")
    return ms / 1000.0


def _count_error(model: LoadedModel, exc: GatewayError, started: float) -> None:
    REQUESTS.inc((model.name, str(model.version), str(exc.status)))
    DURATION.observe(model.metric_labels, monotonic() - started)
    if 400 <= exc.status < 500 and not isinstance(exc, ModelPredictError):
        REJECTIONS.inc((model.name, "bad_request"))


async def invocations(request: Request) -> Response:
    state: GatewayState = request.app.state.gateway
    if state.default_ref is None:
        return error_response(
            NotFound(
                "No default model: start the gateway with --model models:/NAME@ALIAS (or set "
                "serving.default_model), or POST to /models/NAME@ALIAS/invocations."
            )
        )
    return await _invoke(request, state.default_ref)


async def invocations_by_ref(request: Request) -> Response:
    text = request.path_params["ref"]
    try:
        if "@" not in text:
            raise NotFound(
                f"Unknown model path /models/{text}/invocations: use /models/NAME@ALIAS/invocations "
                "or /models/NAME/versions/VERSION/invocations."
            )
        ref = parse_model_ref(text)
    except GatewayError as exc:
        return error_response(exc)
    return await _invoke(request, ref)


async def invocations_by_version(request: Request) -> Response:
    try:
        name = validate_model_name(request.path_params["name"])
        ref = ModelRef(name, version=parse_version(request.path_params["version"]))
    except GatewayError as exc:
        return error_response(exc)
    return await _invoke(request, ref)


_DEFAULT_ROUTE = Route("/invocations", invocations, methods=["POST"])
_BY_REF_ROUTE = Route("/models/{ref}/invocations", invocations_by_ref, methods=["POST"])
_BY_VERSION_ROUTE = Route("/models/{name}/versions/{version}/invocations", invocations_by_version, methods=["POST"])
routes = [_DEFAULT_ROUTE, _BY_REF_ROUTE, _BY_VERSION_ROUTE]


def match_invocation(scope: Scope) -> Route | None:
    """The route a POST to ``scope``'s path takes when it is one of ours, with ``route`` and
    ``path_params`` set in ``scope`` as Starlette's router sets them; None for any other path.

    Lets ``gateway.app`` answer the hottest requests without the router and middleware layers. These
    routes come first in the app, so for a POST the first full match is always the one found here.
    """
    path: str = scope["path"]
    if path == "/invocations":
        route = _DEFAULT_ROUTE
        params: dict[str, str] = {}
    elif path.startswith("/models/") and path.endswith("/invocations"):
        match = _BY_REF_ROUTE.path_regex.match(path)
        route = _BY_REF_ROUTE
        if match is None:
            match = _BY_VERSION_ROUTE.path_regex.match(path)
            route = _BY_VERSION_ROUTE
            if match is None:
                return None
        params = match.groupdict()  # {ref}, {name} and {version} are plain strings (no convertor)
    else:
        return None
    scope["route"] = route
    scope["endpoint"] = route.endpoint
    scope["path_params"] = params
    return route
