"""The MLflow scoring protocol: POST /invocations and the per-model variants."""

from __future__ import annotations

import logging

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.errors import GatewayError, NotFound
from gateway.http import JSON_OPTIONS, RawJSONResponse, error_response, read_body
from gateway.refs import ModelRef, parse_model_ref, parse_version, validate_model_name
from gateway.state import GatewayState

logger = logging.getLogger("gateway.serving")

async def _invoke(request: Request, ref: ModelRef) -> Response:
    state: GatewayState = request.app.state.gateway
    pool = state.pool
    model = pool.get_loaded(ref)
    if model is None:
        try:
            model = await pool.get(ref)
        except GatewayError as exc:
            return error_response(exc)
    pool.acquire(model)
    try:
        body = await read_body(request, state.settings.serving.max_body_bytes)
        prediction, unwrapped = await model.invoke(body, request.headers.get("content-type"))
    except GatewayError as exc:
        if exc.status >= 500:
            logger.error(
                "%s on model %s version %s: %s", exc.error_code, model.name, model.version, exc.message
            )
        return error_response(exc, model.headers)
    except ClientDisconnect:
        # The client left before sending its whole body: nobody reads this answer.
        return Response(status_code=499)
    finally:
        pool.release(model)
    content = prediction if unwrapped else {"predictions": prediction}
    return RawJSONResponse(orjson.dumps(content, option=JSON_OPTIONS), model.raw_headers)


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


routes = [
    Route("/invocations", invocations, methods=["POST"]),
    Route("/models/{ref}/invocations", invocations_by_ref, methods=["POST"]),
    Route("/models/{name}/versions/{version}/invocations", invocations_by_version, methods=["POST"]),
]
