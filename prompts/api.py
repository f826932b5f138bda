"""Prompt registry HTTP API (thin over PromptStore for writes, PromptCache for reads; routes: prompts/routes.py).

Reads never touch the store: they answer from the worker's in-memory catalog, with the JSON body
and ETag prepared when the catalog was loaded, and ``If-None-Match`` answered with 304. Writes go
to the store, then refresh this worker's catalog at once and tell the other replicas
(``PromptsState.notify``, wired by ``gateway.app`` to Redis pub/sub when configured).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from gateway.api.bodies import tags_field
from gateway.errors import BadRequest, GatewayError, InvalidParameter, NotFound
from gateway.http import ORJSONResponse, RawJSONResponse, read_json_object
from prompts.cache import PromptCache
from prompts.catalog import DEFAULT_MAX_RESULTS, CachedVersion, Catalog, Prompt, etag_of
from prompts.refs import parse_prompt_version, validate_alias, validate_prompt_name
from prompts.store import PromptStore

_VERSION_FIELDS = {"template", "commit_message", "tags", "response_format", "model_config"}


@dataclass(eq=False)
class PromptsState:
    """What the prompt endpoints share (``app.state.prompts``)."""

    store: PromptStore
    cache: PromptCache
    # Tells the other replicas that the store changed (Redis pub/sub); None: they poll.
    notify: Callable[[], Awaitable[None]] | None = None

    async def after_write(self) -> None:
        await self.cache.refresh()
        if self.notify is not None:
            await self.notify()


class VersionImmutable(GatewayError):
    status = 405
    error_code = "METHOD_NOT_ALLOWED"
    headers = {"Allow": "GET"}


def _state(request: Request) -> PromptsState:
    state: PromptsState = request.app.state.prompts
    return state


# -- reads (from the cache) ---------------------------------------------------------------------


def _conditional(request: Request, body: bytes, etag: str) -> Response:
    """200 with the body, or 304 when the client's If-None-Match already names this ETag."""
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None and _etag_matches(if_none_match, etag):
        return Response(status_code=304, headers={"etag": etag})
    return RawJSONResponse(body, [(b"etag", etag.encode())])


def _etag_matches(header: str, etag: str) -> bool:
    if header.strip() == "*":
        return True
    return any(tag.strip().removeprefix("W/") == etag for tag in header.split(","))


def _not_found(name: str, exc: GatewayError) -> GatewayError:
    """A lookup miss on a name that could never exist is a 400 naming the rule, else the 404."""
    try:
        validate_prompt_name(name)
    except InvalidParameter as invalid:
        return invalid
    return exc


def _resolve(catalog: Catalog, text: str) -> CachedVersion:
    """``name@alias`` (``@latest`` built in) or a bare name (its latest version)."""
    name, _, alias = text.partition("@")
    try:
        return catalog.by_alias(name, alias or "latest")
    except NotFound as exc:
        raise _not_found(name, exc) from None


async def get_prompt(request: Request) -> Response:
    """``GET /api/prompts/{name}`` (the prompt and its versions) or ``/api/prompts/{name}@{alias}``."""
    text: str = request.path_params["name"]
    catalog = _state(request).cache.catalog
    if "@" in text:
        cached = _resolve(catalog, text)
        return _conditional(request, cached.body, cached.etag)
    try:
        body, etag = catalog.prompt_body(text)
    except NotFound as exc:
        raise _not_found(text, exc) from None
    return _conditional(request, body, etag)


async def get_version(request: Request) -> Response:
    name: str = request.path_params["name"]
    number = parse_prompt_version(request.path_params["version"])
    try:
        cached = _state(request).cache.catalog.version(name, number)
    except NotFound as exc:
        raise _not_found(name, exc) from None
    return _conditional(request, cached.body, cached.etag)


async def list_versions(request: Request) -> Response:
    name: str = request.path_params["name"]
    catalog = _state(request).cache.catalog
    try:
        catalog.prompt(name)
    except NotFound as exc:
        raise _not_found(name, exc) from None
    body = orjson.dumps({"versions": [v.version.to_dict(v.aliases) for v in catalog.versions_of.get(name, [])]})
    return _conditional(request, body, etag_of(body))


async def list_prompts(request: Request) -> Response:
    """``GET /api/prompts?name_prefix=&tag=KEY=VALUE&tag=KEY&max_results=&page_token=``."""
    query = request.query_params
    unknown = sorted(set(query) - {"name_prefix", "tag", "max_results", "page_token"})
    if unknown:
        raise InvalidParameter(
            f"Unknown query parameter(s) {', '.join(unknown)}; known: name_prefix, tag, max_results, page_token."
        )
    tags: dict[str, str | None] = {}
    for item in query.getlist("tag"):
        key, eq, value = item.partition("=")
        if not key:
            raise InvalidParameter(f"Invalid tag filter {item!r}: expected tag=KEY=VALUE or tag=KEY.")
        tags[key] = value if eq else None
    max_results = DEFAULT_MAX_RESULTS
    if "max_results" in query:
        text = query["max_results"]
        if (
            not (text.isascii() and text.isdigit()) or len(text) > 9
        ):  # more digits than any limit (and than int() reads)
            raise InvalidParameter(f"Invalid max_results {text[:20]!r}: expected an integer from 1 to 1000.")
        max_results = int(text)
    prompts, next_token = _state(request).cache.catalog.search(
        name_prefix=query.get("name_prefix", ""),
        tags=tags,
        max_results=max_results,
        page_token=query.get("page_token") or None,
    )
    answer: dict[str, Any] = {"prompts": prompts}
    if next_token is not None:
        answer["next_page_token"] = next_token
    body = orjson.dumps(answer)
    return _conditional(request, body, etag_of(body))


async def _render(request: Request, cached: CachedVersion) -> Response:
    body = await read_json_object(request)
    unknown = sorted(set(body) - {"variables"})
    if unknown:
        raise BadRequest(
            f'Unknown field(s) {", ".join(unknown)} in the render body; expected {{"variables": {{...}}}}.'
        )
    variables = body.get("variables", {})
    if not isinstance(variables, dict):
        raise BadRequest(f"Field 'variables' must be an object, got {type(variables).__name__}.")
    version = cached.version
    answer: dict[str, Any] = {"name": version.name, "version": version.version, "template_type": version.template_type}
    if version.template_type == "text":
        answer["text"] = cached.compiled.render_text(variables)
    else:
        answer["messages"] = cached.compiled.render_messages(variables)
    answer["model_config"] = version.model_config
    answer["response_format"] = version.response_format
    return ORJSONResponse(answer)


async def render_ref(request: Request) -> Response:
    """``POST /api/prompts/{name}@{alias}/render`` (a bare name renders its latest version)."""
    return await _render(request, _resolve(_state(request).cache.catalog, request.path_params["name"]))


async def render_version(request: Request) -> Response:
    name: str = request.path_params["name"]
    number = parse_prompt_version(request.path_params["version"])
    try:
        cached = _state(request).cache.catalog.version(name, number)
    except NotFound as exc:
        raise _not_found(name, exc) from None
    return await _render(request, cached)


# -- writes (to the store, then refresh) ---------------------------------------------------------


def _prompt_answer(catalog: Catalog, prompt: Prompt) -> dict[str, Any]:
    if catalog.prompts.get(prompt.name) == prompt:
        return catalog.prompt_dict(prompt.name)
    # The refresh after the write failed (the store went away just then): answer what was written.
    return dataclasses.asdict(prompt)


async def create_prompt(request: Request) -> Response:
    state = _state(request)
    body = await read_json_object(request)
    unknown = sorted(set(body) - {"name", "description", "tags"})
    if unknown:
        raise BadRequest(f"Unknown field(s) {', '.join(unknown)}; a prompt has name, description and tags.")
    name = body.get("name")
    if not isinstance(name, str):
        raise BadRequest("Field 'name' is required and must be a string.")
    prompt = await run_in_threadpool(state.store.create_prompt, name, body.get("description"), tags_field(body))
    await state.after_write()
    answer = _prompt_answer(state.cache.catalog, prompt)
    return ORJSONResponse(answer, status_code=201)


async def update_prompt(request: Request) -> Response:
    """``PATCH /api/prompts/{name}`` ``{description?, tags?}``: prompts are mutable, versions are not."""
    state = _state(request)
    name: str = request.path_params["name"]
    validate_prompt_name(name)
    body = await read_json_object(request)
    unknown = sorted(set(body) - {"description", "tags"})
    if unknown:
        raise BadRequest(
            f"Unknown field(s) {', '.join(unknown)}; a prompt's description and tags can change, "
            "its versions cannot (register a new version instead)."
        )
    changes = {key: (tags_field(body) if key == "tags" else body[key]) for key in body}
    prompt = await run_in_threadpool(lambda: state.store.update_prompt(name, **changes))
    await state.after_write()
    answer = _prompt_answer(state.cache.catalog, prompt)
    return ORJSONResponse(answer)


async def create_version(request: Request) -> Response:
    state = _state(request)
    name: str = request.path_params["name"]
    validate_prompt_name(name)
    body = await read_json_object(request)
    unknown = sorted(set(body) - _VERSION_FIELDS)
    if unknown:
        raise BadRequest(
            f"Unknown field(s) {', '.join(unknown)}; a prompt version has {', '.join(sorted(_VERSION_FIELDS))}."
        )
    if "template" not in body:
        raise BadRequest("Field 'template' is required: a string or a list of {role, content} messages.")
    version = await run_in_threadpool(
        lambda: state.store.create_version(
            name,
            body["template"],
            commit_message=body.get("commit_message"),
            tags=tags_field(body),
            response_format=body.get("response_format"),
            model_config=body.get("model_config"),
        )
    )
    await state.after_write()
    return ORJSONResponse(version.to_dict(), status_code=201)


async def refuse_version_change(request: Request) -> Response:
    name, version = request.path_params["name"], request.path_params["version"]
    raise VersionImmutable(
        f"Prompt versions are immutable: {request.method} on version {version} of {name!r} is not allowed. "
        f"Register a new version with POST /api/prompts/{name}/versions and move an alias to it."
    )


async def set_alias(request: Request) -> Response:
    state = _state(request)
    name, alias = request.path_params["name"], request.path_params["alias"]
    validate_prompt_name(name)
    validate_alias(alias)
    body = await read_json_object(request)
    if "version" not in body:
        raise BadRequest("Field 'version' is required: the version number the alias should name.")
    number = parse_prompt_version(body["version"])
    await run_in_threadpool(state.store.set_alias, name, alias, number)
    await state.after_write()
    return ORJSONResponse({"name": name, "alias": alias, "version": number})


async def delete_alias(request: Request) -> Response:
    state = _state(request)
    name, alias = request.path_params["name"], request.path_params["alias"]
    validate_prompt_name(name)
    await run_in_threadpool(state.store.delete_alias, name, alias)
    await state.after_write()
    return Response(status_code=204)
