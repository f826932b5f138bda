"""The MLflow scoring protocol: POST /invocations and the per-model variants.

Two ways in, one answer. ``GatewayApp`` (gateway/app.py) takes the hot one: its fast dispatcher finds
the route from the raw scope (the routes are declared in gateway/api/routes.py), ``answer`` reads the body
from ``receive`` and returns the prediction's JSON bytes with the model that made it, and ``send_answer``
sends them with the model's prebuilt header list; no Starlette Request or Response object is made for a
prediction. The endpoints below are the usual Starlette ones over the same core (``_answer``), taken when
the app has middleware or a root path; ``REF_OF`` names the model each endpoint's path parameters give.
Errors are ``Response`` objects either way (``error_response``), so their bytes are the same.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from time import monotonic

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

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

# A 200 answer: the JSON body, already dumped, and the model version that made it (its headers).
Prediction = tuple[bytes, LoadedModel]
# The model a route's path parameters name (raises a GatewayError for a bad or unknown reference).
RefOf = Callable[[GatewayState, Mapping[str, str]], ModelRef]


# --------------------------------------------------------------------------- which model


def _default_ref(state: GatewayState, params: Mapping[str, str]) -> ModelRef:
    if state.default_ref is None:
        raise NotFound(
            "No default model: start the gateway with --model models:/NAME@ALIAS (or set "
            "serving.default_model), or POST to /models/NAME@ALIAS/invocations."
        )
    return state.default_ref


def _alias_ref(state: GatewayState, params: Mapping[str, str]) -> ModelRef:
    text = params["ref"]
    if "@" not in text:
        raise NotFound(
            f"Unknown model path /models/{text}/invocations: use /models/NAME@ALIAS/invocations "
            "or /models/NAME/versions/VERSION/invocations."
        )
    return parse_model_ref(text)


def _version_ref(state: GatewayState, params: Mapping[str, str]) -> ModelRef:
    return ModelRef(validate_model_name(params["name"]), version=parse_version(params["version"]))


# --------------------------------------------------------------------------- the request


def answer(
    state: GatewayState, traced: bool, ref_of: RefOf, scope: Scope, receive: Receive
) -> Awaitable[Response | Prediction]:
    """The answer to a scoring POST (``GatewayApp``'s fast path; ``ref_of``: the route's ``REF_OF``): a
    ``Prediction`` for a 200, a ``Response`` for anything else or when spans are exported (``traced``:
    the span describes the Response). Unexpected errors propagate, for the app's handlers.

    Not a coroutine itself but the one to await: a request that waits for its batch suspends and
    resumes through every coroutine frame above the wait, so the hottest path keeps one fewer."""
    try:
        ref = ref_of(state, scope["path_params"])
    except GatewayError as exc:
        return _ready(error_response(exc))
    if traced:
        return trace_invocation(Request(scope, receive), ref, _invoke_response)
    return _answer(state, scope, receive, ref)


async def _ready(response: Response) -> Response:
    return response


async def send_answer(result: Response | Prediction, scope: Scope, receive: Receive, send: Send) -> None:
    if isinstance(result, Response):
        await result(scope, receive, send)
        return
    body, model = result
    # The headers RawJSONResponse sends, in its order: content-length, content-type, X-Model-*.
    headers = [(b"content-length", str(len(body)).encode()), *model.json_headers]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _invoke_response(request: Request, ref: ModelRef) -> Response:
    result = await _answer(request.app.state.gateway, request.scope, request.receive, ref)
    if isinstance(result, Response):
        return result
    return RawJSONResponse(result[0], result[1].raw_headers)


async def _answer(state: GatewayState, scope: Scope, receive: Receive, ref: ModelRef) -> Response | Prediction:
    started = monotonic()
    pool = state.pool
    model = pool.get_loaded(ref)
    if model is None:
        try:
            model = await pool.get(ref)
        except GatewayError as exc:
            return error_response(exc)
    # One pass over the raw headers (ASGI lowercases their names) finds the three headers we read.
    content_type = timeout_header = content_length = None
    for key, value in scope["headers"]:
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
        body = await read_raw_body(receive, content_length, state.invocation_body_limit)
        prediction, unwrapped = await model.invoke(
            body, content_type, started=started, timeout_s=timeout_s, span=scope.get(SPAN_SCOPE_KEY)
        )
    except GatewayError as exc:
        if exc.status >= 500 and exc.status not in (503, 504):
            logger.error("%s on model %s version %s: %s", exc.error_code, model.name, model.version, exc.message)
        _count_error(model, exc, started)
        return error_response(exc, model.headers)
    except ClientDisconnect:
        # The client left before sending its whole body: nobody reads this answer.
        REQUESTS.inc((model.name, str(model.version), "499"))
        return Response(status_code=499)
    finally:
        pool.release(model)
    content = prediction if unwrapped else {"predictions": prediction}
    body = orjson.dumps(content, option=JSON_OPTIONS)
    REQUESTS.inc(model.ok_labels)
    DURATION.observe(model.metric_labels, monotonic() - started)
    return body, model


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


# --------------------------------------------------------------------------- the usual way: routes


async def _endpoint(request: Request, ref_of: RefOf) -> Response:
    try:
        ref = ref_of(request.app.state.gateway, request.path_params)
    except GatewayError as exc:
        return error_response(exc)
    # A SERVER span only when spans are exported (app.state.trace_invocations); else no span work at all.
    if request.app.state.trace_invocations:
        return await trace_invocation(request, ref, _invoke_response)
    return await _invoke_response(request, ref)


async def invocations(request: Request) -> Response:
    return await _endpoint(request, _default_ref)


async def invocations_by_ref(request: Request) -> Response:
    return await _endpoint(request, _alias_ref)


async def invocations_by_version(request: Request) -> Response:
    return await _endpoint(request, _version_ref)


# The model each scoring endpoint serves, from its path parameters (the fast path reads it too).
REF_OF: dict[Callable[[Request], Awaitable[Response]], RefOf] = {
    invocations: _default_ref, invocations_by_ref: _alias_ref, invocations_by_version: _version_ref,
}  # fmt: skip
