"""Registry admin API: registered models, versions and aliases (thin over RegistryStore)."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from gateway.api.bodies import tags_field
from gateway.errors import BadRequest
from gateway.http import ORJSONResponse, read_json_object
from gateway.refs import parse_model_ref, parse_version, validate_model_name
from gateway.registration import register_version
from gateway.state import GatewayState


def _state(request: Request) -> GatewayState:
    state: GatewayState = request.app.state.gateway
    return state


def _optional_str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise BadRequest(f"Field '{key}' must be a string, got {type(value).__name__}.")
    return value


async def _after_write(request: Request) -> None:
    # This worker sees the change at once; the others through Redis (when configured), else
    # within serving.refresh_interval_s.
    await _state(request).registry_changed()


async def create_model(request: Request) -> Response:
    body = await read_json_object(request)
    name = body.get("name")
    if not isinstance(name, str):
        raise BadRequest("Field 'name' is required and must be a string.")
    validate_model_name(name)
    model = await run_in_threadpool(
        _state(request).store.create_model, name, _optional_str(body, "description"), tags_field(body)
    )
    await _after_write(request)
    return ORJSONResponse(model.to_dict(), status_code=201)


async def list_models(request: Request) -> Response:
    models = await run_in_threadpool(_state(request).store.list_models)
    return ORJSONResponse({"models": [m.to_dict() for m in models]})


async def get_model(request: Request) -> Response:
    text = request.path_params["name"]
    store = _state(request).store
    if "@" in text:
        ref = parse_model_ref(text)
        version = await run_in_threadpool(store.resolve, ref)
        return ORJSONResponse(version.to_dict())
    model = await run_in_threadpool(store.get_model, validate_model_name(text))
    versions = await run_in_threadpool(store.list_versions, model.name)
    return ORJSONResponse({**model.to_dict(), "versions": [v.to_dict() for v in versions]})


async def create_version(request: Request) -> Response:
    state = _state(request)
    name = validate_model_name(request.path_params["name"])
    body = await read_json_object(request)
    source = body.get("source")
    if not isinstance(source, str) or not source:
        raise BadRequest("Field 'source' is required: the path or file:// URI of a model package.")
    version = await run_in_threadpool(
        lambda: register_version(
            state.store,
            name,
            source,
            artifact_roots=state.settings.artifact_roots,
            description=_optional_str(body, "description"),
            tags=tags_field(body),
        )
    )
    await _after_write(request)
    return ORJSONResponse(version.to_dict(), status_code=201)


async def list_versions(request: Request) -> Response:
    name = validate_model_name(request.path_params["name"])
    versions = await run_in_threadpool(_state(request).store.list_versions, name)
    return ORJSONResponse({"versions": [v.to_dict() for v in versions]})


async def get_version(request: Request) -> Response:
    name = validate_model_name(request.path_params["name"])
    number = parse_version(request.path_params["version"])
    version = await run_in_threadpool(_state(request).store.get_version, name, number)
    return ORJSONResponse(version.to_dict())


async def set_alias(request: Request) -> Response:
    name = validate_model_name(request.path_params["name"])
    alias = request.path_params["alias"]
    body = await read_json_object(request)
    if "version" not in body:
        raise BadRequest("Field 'version' is required.")
    number = parse_version(body["version"])
    store = _state(request).store
    await run_in_threadpool(store.set_alias, name, alias, number)
    await _after_write(request)
    return ORJSONResponse({"name": name, "alias": alias, "version": number})


async def delete_alias(request: Request) -> Response:
    name = validate_model_name(request.path_params["name"])
    alias = request.path_params["alias"]
    await run_in_threadpool(_state(request).store.delete_alias, name, alias)
    await _after_write(request)
    return Response(status_code=204)
