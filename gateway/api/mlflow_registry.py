"""MLflow's model-registry REST API (``/api/2.0/mlflow/...``), translated onto the gateway's registries.

Enough of it for ``MlflowClient(registry_uri="http://gateway:8080")`` and ``mlflow.set_registry_uri(...)``:
registered models, model versions, tags, aliases and ``get-download-uri``, with the paths, methods, fields
and answers of MLflow 3's server (mlflow/protos/model_registry.proto). As MLflow's ``rest_utils`` sends them,
a GET carries its fields in the query string (MLflow's server also reads a GET's JSON body when it has no
query string, and so do these), every other method a JSON body (``gateway.http.read_json_object``: another
content type is a 415). Answers are MLflow's JSON (gateway/api/mlflow_entities.py); a write answers ``{}``.
Errors are MLflow's ``{"error_code", "message"}`` with its statuses: a missing name, version or alias is
404 RESOURCE_DOES_NOT_EXIST, a bad or missing field 400 INVALID_PARAMETER_VALUE, an existing name 400
RESOURCE_ALREADY_EXISTS (MLflow's status, where our own API answers 409). Paths not listed in the route table
answer 404 ENDPOINT_NOT_FOUND (docs/compatibility.md lists both).

MLflow keeps prompts as registered models tagged ``mlflow.prompt.is_prompt`` in the models' namespace;
``mlflow.genai.register_prompt`` and ``load_prompt`` use only these calls. Each call is routed by name: a
model of the gateway's registry (``ModelBackend``), else a prompt of its prompt registry (the app's
``app.state.mlflow_prompts``, prompts/mlflow_api.py), else the models' 404. A name is one or the other:
creating one that the other registry holds is RESOURCE_ALREADY_EXISTS. A search covers prompts only when its
filter asks for them, as MLflow's server does. A call that reaches a prompt also needs the key scope
``prompts:read`` / ``prompts:write`` beyond the route's ``registry:read`` / ``registry:write``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gateway.api.bodies import tags_field
from gateway.api.mlflow_entities import IS_PROMPT_TAG, Entity, RegistryBackend, ResourceAlreadyExists
from gateway.api.mlflow_models import ModelBackend
from gateway.api.mlflow_search import MODEL_RULES, VERSION_RULES, Rules, is_querying_prompts, parse_filter, search
from gateway.api.routing import authorize_scope
from gateway.error_text import json_type
from gateway.errors import AlreadyExists, InvalidParameter
from gateway.http import ORJSONResponse, read_json_object
from gateway.refs import parse_version

PREFIX = "/api/2.0/mlflow"
_REPEATED = frozenset({"order_by", "stages"})  # repeated proto fields: a list even when given once


# -- the request's fields ------------------------------------------------------------------------------


async def _params(request: Request) -> dict[str, Any]:
    if request.method != "GET":
        return await read_json_object(request)
    query = request.query_params
    if query:
        return {key: query.getlist(key) if key in _REPEATED else query[key] for key in query}
    if request.headers.get("content-length", "0") != "0" or "transfer-encoding" in request.headers:
        return await read_json_object(request)
    return {}


def _string(params: dict[str, Any], key: str) -> str | None:
    value = params.get(key)
    if value is not None and not isinstance(value, str):
        raise InvalidParameter(f"Parameter '{key}' must be a string, got {json_type(value)}.")
    return value


def _required(params: dict[str, Any], key: str) -> str:
    value = _string(params, key)
    if not value:
        raise InvalidParameter(f"Missing value for required parameter '{key}'.")
    return value


def _version(params: dict[str, Any]) -> int:
    value = params.get("version")
    if value is None or value == "":
        raise InvalidParameter("Missing value for required parameter 'version'.")
    return parse_version(value)


def _strings(params: dict[str, Any], key: str) -> list[str]:
    value = params.get(key)
    items = [] if value is None else [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise InvalidParameter(f"Parameter '{key}' must be a list of strings, got {json_type(value)}.")
    return items


def _max_results(params: dict[str, Any]) -> int | None:
    value = params.get("max_results")
    if value is None:
        return None
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(text, str) or not (text.isascii() and text.isdigit()) or len(text) > 9:
        raise InvalidParameter(f"Parameter 'max_results' must be a positive integer, got {str(value)[:40]!r}.")
    return int(text)


def _tags(params: dict[str, Any]) -> dict[str, str]:
    return tags_field(params) or {}


def _asks_for_prompt(tags: dict[str, str]) -> bool:
    return tags.get(IS_PROMPT_TAG, "false").lower() == "true"


# -- which registry answers -----------------------------------------------------------------------------


def _registries(request: Request) -> tuple[RegistryBackend, RegistryBackend | None]:
    prompts: RegistryBackend | None = getattr(request.app.state, "mlflow_prompts", None)
    return ModelBackend(request.app.state.gateway), prompts


def _authorize(request: Request, backend: RegistryBackend, *, write: bool) -> RegistryBackend:
    required = backend.write_scope if write else backend.read_scope
    if required is not None:
        authorize_scope(request.scope, required)
    return backend


async def _holder(request: Request, name: str, *, write: bool) -> tuple[RegistryBackend, bool]:
    """The registry that holds ``name`` and True; the models' (whose 404 names it) and False when none does."""
    models, prompts = _registries(request)
    if await models.has(name):
        return models, True
    if prompts is not None and await prompts.has(name):
        return _authorize(request, prompts, write=write), True
    return models, False


async def _backend(request: Request, name: str, *, write: bool = False) -> RegistryBackend:
    return (await _holder(request, name, write=write))[0]


def _ok(body: Entity | None = None) -> Response:
    return ORJSONResponse(body or {})


# -- registered models ------------------------------------------------------------------------------------


async def create_registered_model(request: Request) -> Response:
    """A prompt when the tags say ``mlflow.prompt.is_prompt: true`` (``register_prompt``), else a model."""
    params = await _params(request)
    name, tags = _required(params, "name"), _tags(params)
    models, prompts = _registries(request)
    backend = models
    if prompts is not None:
        is_prompt = _asks_for_prompt(tags)
        if await (models if is_prompt else prompts).has(name):
            held = "A registered model" if is_prompt else "A prompt"
            raise ResourceAlreadyExists(
                f"{held} named {name!r} already exists: models and prompts share names in MLflow's API."
            )
        backend = _authorize(request, prompts, write=True) if is_prompt else models
    try:
        model = await backend.create_registered_model(name, _string(params, "description"), tags)
    except AlreadyExists as exc:  # MLflow's status for it: 400, where our own API answers 409
        raise ResourceAlreadyExists(exc.message) from None
    return _ok({"registered_model": model})


async def get_registered_model(request: Request) -> Response:
    params = await _params(request)
    name = _required(params, "name")
    return _ok({"registered_model": await (await _backend(request, name)).get_registered_model(name)})


async def update_registered_model(request: Request) -> Response:
    params = await _params(request)
    name = _required(params, "name")
    backend = await _backend(request, name, write=True)
    return _ok({"registered_model": await backend.update_registered_model(name, _string(params, "description"))})


async def delete_registered_model(request: Request) -> Response:
    name = _required(await _params(request), "name")
    await (await _backend(request, name, write=True)).delete_registered_model(name)
    return _ok()


async def search_registered_models(request: Request) -> Response:
    params = await _params(request)
    page, token = await _search(request, params, MODEL_RULES, lambda backend: backend.registered_models())
    return _ok({"registered_models": page, **({"next_page_token": token} if token else {})})


async def set_registered_model_tag(request: Request) -> Response:
    params = await _params(request)
    name, key = _required(params, "name"), _required(params, "key")
    value = _string(params, "value") or ""
    await (await _backend(request, name, write=True)).set_registered_model_tag(name, key, value)
    return _ok()


async def delete_registered_model_tag(request: Request) -> Response:
    params = await _params(request)
    name, key = _required(params, "name"), _required(params, "key")
    await (await _backend(request, name, write=True)).set_registered_model_tag(name, key, None)
    return _ok()


async def get_latest_versions(request: Request) -> Response:
    """Stages are gone from MLflow 3's registry; every version here is in stage ``None``."""
    params = await _params(request)
    name = _required(params, "name")
    stages = {stage.lower() for stage in _strings(params, "stages")}
    model = await (await _backend(request, name)).get_registered_model(name)
    latest = [v for v in model.get("latest_versions", []) if not stages or v["current_stage"].lower() in stages]
    return _ok({"model_versions": latest})


# -- aliases ------------------------------------------------------------------------------------------------


async def set_alias(request: Request) -> Response:
    params = await _params(request)
    name, alias, version = _required(params, "name"), _required(params, "alias"), _version(params)
    await (await _backend(request, name, write=True)).set_alias(name, alias, version)
    return _ok()


async def delete_alias(request: Request) -> Response:
    params = await _params(request)
    name, alias = _required(params, "name"), _required(params, "alias")
    await (await _backend(request, name, write=True)).delete_alias(name, alias)
    return _ok()


async def get_model_version_by_alias(request: Request) -> Response:
    params = await _params(request)
    name, alias = _required(params, "name"), _required(params, "alias")
    return _ok({"model_version": await (await _backend(request, name)).get_model_version_by_alias(name, alias)})


# -- model versions -----------------------------------------------------------------------------------------


async def create_model_version(request: Request) -> Response:
    """``run_id``, ``run_link`` and ``model_id`` are read as strings and not kept (this registry has no runs)."""
    params = await _params(request)
    name, source, tags = _required(params, "name"), _required(params, "source"), _tags(params)
    for key in ("run_id", "run_link", "model_id"):
        _string(params, key)
    backend, found = await _holder(request, name, write=True)
    if found and backend.prompts != _asks_for_prompt(tags):
        raise InvalidParameter(
            f"{name!r} is a prompt: its versions are registered with mlflow.genai.register_prompt."
            if backend.prompts
            else f"{name!r} is a registered model, not a prompt: a prompt cannot have a model's name."
        )
    version = await backend.create_model_version(name, source, _string(params, "description"), tags)
    return _ok({"model_version": version})


async def get_model_version(request: Request) -> Response:
    params = await _params(request)
    name, version = _required(params, "name"), _version(params)
    return _ok({"model_version": await (await _backend(request, name)).get_model_version(name, version)})


async def update_model_version(request: Request) -> Response:
    params = await _params(request)
    name, version = _required(params, "name"), _version(params)
    backend = await _backend(request, name, write=True)
    updated = await backend.update_model_version(name, version, _string(params, "description"))
    return _ok({"model_version": updated})


async def delete_model_version(request: Request) -> Response:
    params = await _params(request)
    name, version = _required(params, "name"), _version(params)
    await (await _backend(request, name, write=True)).delete_model_version(name, version)
    return _ok()


async def search_model_versions(request: Request) -> Response:
    params = await _params(request)
    page, token = await _search(request, params, VERSION_RULES, lambda backend: backend.model_versions())
    return _ok({"model_versions": page, **({"next_page_token": token} if token else {})})


async def set_model_version_tag(request: Request) -> Response:
    params = await _params(request)
    name, version, key = _required(params, "name"), _version(params), _required(params, "key")
    value = _string(params, "value") or ""
    await (await _backend(request, name, write=True)).set_model_version_tag(name, version, key, value)
    return _ok()


async def delete_model_version_tag(request: Request) -> Response:
    params = await _params(request)
    name, version, key = _required(params, "name"), _version(params), _required(params, "key")
    await (await _backend(request, name, write=True)).set_model_version_tag(name, version, key, None)
    return _ok()


async def get_download_uri(request: Request) -> Response:
    params = await _params(request)
    name, version = _required(params, "name"), _version(params)
    return _ok({"artifact_uri": await (await _backend(request, name)).download_uri(name, version)})


# -- search ---------------------------------------------------------------------------------------------------


async def _search(
    request: Request,
    params: dict[str, Any],
    rules: Rules,
    entities: Callable[[RegistryBackend], Awaitable[list[Entity]]],
) -> tuple[list[Entity], str | None]:
    clauses = parse_filter(_string(params, "filter"), rules)
    order_by, max_results = _strings(params, "order_by"), _max_results(params)
    page_token = _string(params, "page_token")
    models, prompts = _registries(request)
    found: list[Entity] = await entities(models)
    if prompts is not None and is_querying_prompts(clauses):
        found += await entities(_authorize(request, prompts, write=False))
    return search(found, rules, clauses=clauses, order_by=order_by, max_results=max_results, page_token=page_token)
