"""The prompt registry behind MLflow's REST API: what ``mlflow.genai.register_prompt`` and ``load_prompt`` do,
landing in the same rows ``/api/prompts`` reads.

MLflow 3's client has no prompt endpoints of its own against an OSS server: a prompt is a registered model
tagged ``mlflow.prompt.is_prompt: true``, and each version a model version (source ``dummy-source``) whose
tags carry the template (``mlflow.prompt.text``, a JSON list for chat), its type (``_mlflow_prompt_type``),
``_mlflow_prompt_response_format`` and ``_mlflow_prompt_model_config`` (mlflow/tracking/client.py
``register_prompt``, mlflow/prompt/registry_utils.py ``model_version_to_prompt_version``). So
``register_prompt`` is: get the registered model (404: create it with the prompt tag and the prompt's tags),
set its tags, create a model version; ``load_prompt("prompts:/qa@production")`` is: get the registered
model (its prompt tag), get the version by alias, then by number. ``PromptBackend`` answers those calls
(gateway/api/mlflow_registry.py routes them here by name) with our prompts written as MLflow's entities,
and takes their writes apart into ``PromptStore`` calls: the template, commit message (the version's
description), tags, response format and model config of a version, the description and tags of a prompt.

Reads come from the worker's catalog after a revision check (``PromptCache.refresh``: one integer read, a
reload only when the store moved), so a client whose calls land on different workers reads its own
writes. Versions are immutable here: changing a version's description or tags, or deleting one, is refused
(MLflow allows it); a prompt is deleted only while it has no version (what a failed first
``register_prompt`` leaves behind, and deletes).
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from starlette.concurrency import run_in_threadpool

from gateway.api.mlflow_entities import IS_PROMPT_TAG, Entity, model_version_json, registered_model_json
from gateway.errors import InvalidParameter
from gateway.json_depth import DEFAULT_MAX_JSON_DEPTH, json_depth_exceeds, too_deep_message
from prompts.api import PromptsState
from prompts.catalog import Catalog, Prompt, PromptVersion
from prompts.refs import LATEST

TEXT_TAG = "mlflow.prompt.text"
TYPE_TAG = "_mlflow_prompt_type"
RESPONSE_FORMAT_TAG = "_mlflow_prompt_response_format"
MODEL_CONFIG_TAG = "_mlflow_prompt_model_config"
# MLflow's placeholder sources of prompt versions (mlflow/prompt/constants.py): the client's, the store's.
SOURCES = ("dummy-source", "prompt-template")
_INTERNAL_TAGS = frozenset({IS_PROMPT_TAG, TEXT_TAG, TYPE_TAG, RESPONSE_FORMAT_TAG, MODEL_CONFIG_TAG})


def version_json(version: PromptVersion, aliases: list[str]) -> Entity:
    """A prompt version as MLflow's model version: the template and its settings in the reserved tags."""
    tags = dict(version.tags)
    tags[IS_PROMPT_TAG] = "true"
    tags[TYPE_TAG] = version.template_type
    tags[TEXT_TAG] = version.template if isinstance(version.template, str) else json.dumps(version.template)
    if version.response_format is not None:
        tags[RESPONSE_FORMAT_TAG] = json.dumps(version.response_format)
    if version.model_config is not None:
        tags[MODEL_CONFIG_TAG] = json.dumps(version.model_config)
    return model_version_json(
        version.name,
        version.version,
        source=SOURCES[0],
        description=version.commit_message,
        tags=tags,
        aliases=aliases,
        created_at=version.created_at,
        updated_at=version.created_at,
    )


def _prompt_json(catalog: Catalog, prompt: Prompt, aliases: dict[str, int]) -> Entity:
    versions = catalog.versions_of.get(prompt.name, [])
    latest = versions[-1] if versions else None
    return registered_model_json(
        prompt.name,
        description=prompt.description,
        tags={IS_PROMPT_TAG: "true", **prompt.tags},
        created_at=prompt.created_at,
        updated_at=prompt.updated_at,
        aliases=aliases,
        latest=None if latest is None else version_json(latest.version, latest.aliases),
    )


def _aliases_by_prompt(catalog: Catalog) -> dict[str, dict[str, int]]:
    found: dict[str, dict[str, int]] = defaultdict(dict)
    for (name, alias), number in catalog.aliases.items():
        if alias != LATEST:
            found[name][alias] = number
    return found


def _json_tag(tags: dict[str, str], key: str, max_depth: int) -> Any:
    """A tag holding JSON (a chat template, a response format): nested no deeper than a body may be
    (``http.max_json_depth``), as it meets the same code (rendering, the LLM proxy's upstream body)."""
    text = tags[key]
    if json_depth_exceeds(text.encode(), max_depth):
        raise InvalidParameter(f"Tag {key!r}: {too_deep_message(max_depth)}")
    try:
        return json.loads(text)
    except ValueError:
        raise InvalidParameter(f"Tag {key!r} must hold JSON, got {text[:100]!r}.") from None


def _immutable(name: str, version: int, what: str) -> InvalidParameter:
    return InvalidParameter(
        f"Prompt versions are immutable in this gateway: cannot {what} version {version} of prompt {name!r}. "
        "Register a new version (mlflow.genai.register_prompt) and move an alias to it."
    )


class PromptBackend:
    """MLflow's registry calls on prompts (gateway.api.mlflow_entities.RegistryBackend)."""

    prompts = True
    read_scope: str | None = "prompts:read"
    write_scope: str | None = "prompts:write"

    def __init__(self, state: PromptsState, max_json_depth: int = DEFAULT_MAX_JSON_DEPTH) -> None:
        self.state = state
        self.store = state.store
        self.max_json_depth = max_json_depth  # http.max_json_depth, for the tags that hold JSON

    async def _catalog(self) -> Catalog:
        await self.state.cache.refresh()
        return self.state.cache.catalog

    async def has(self, name: str) -> bool:
        return name in (await self._catalog()).prompts

    async def registered_models(self) -> list[Entity]:
        catalog = await self._catalog()
        aliases = _aliases_by_prompt(catalog)
        return [_prompt_json(catalog, prompt, aliases.get(name, {})) for name, prompt in catalog.prompts.items()]

    async def model_versions(self) -> list[Entity]:
        catalog = await self._catalog()
        return [version_json(cached.version, cached.aliases) for cached in catalog.versions.values()]

    async def create_registered_model(self, name: str, description: str | None, tags: dict[str, str]) -> Entity:
        user_tags = {key: value for key, value in tags.items() if key not in _INTERNAL_TAGS}
        await run_in_threadpool(self.store.create_prompt, name, description, user_tags)
        await self.state.after_write()
        return await self.get_registered_model(name)

    async def get_registered_model(self, name: str) -> Entity:
        catalog = await self._catalog()
        prompt = catalog.prompt(name)
        return _prompt_json(catalog, prompt, _aliases_by_prompt(catalog).get(name, {}))

    async def update_registered_model(self, name: str, description: str | None) -> Entity:
        await run_in_threadpool(lambda: self.store.update_prompt(name, description=description))
        await self.state.after_write()
        return await self.get_registered_model(name)

    async def delete_registered_model(self, name: str) -> None:
        await run_in_threadpool(self.store.delete_prompt, name)
        await self.state.after_write()

    async def set_registered_model_tag(self, name: str, key: str, value: str | None) -> None:
        if key == IS_PROMPT_TAG:
            raise InvalidParameter(f"Tag {IS_PROMPT_TAG!r} is what makes {name!r} a prompt: it cannot change.")
        await run_in_threadpool(self.store.set_tag, name, key, value)
        await self.state.after_write()

    async def create_model_version(
        self, name: str, source: str, description: str | None, tags: dict[str, str]
    ) -> Entity:
        if source not in SOURCES:
            raise InvalidParameter(
                f"Invalid prompt source {source[:100]!r}: prompt versions use MLflow's placeholder {SOURCES[0]!r}."
            )
        if TEXT_TAG not in tags:
            raise InvalidParameter(f"A prompt version carries its template in the tag {TEXT_TAG!r}; it is missing.")
        kind = tags.get(TYPE_TAG, "text")
        if kind not in ("text", "chat"):
            raise InvalidParameter(f"Tag {TYPE_TAG!r} must be 'text' or 'chat', got {kind[:40]!r}.")
        depth = self.max_json_depth
        template = tags[TEXT_TAG] if kind == "text" else _json_tag(tags, TEXT_TAG, depth)
        response_format = _json_tag(tags, RESPONSE_FORMAT_TAG, depth) if RESPONSE_FORMAT_TAG in tags else None
        model_config = _json_tag(tags, MODEL_CONFIG_TAG, depth) if MODEL_CONFIG_TAG in tags else None
        user_tags = {key: value for key, value in tags.items() if key not in _INTERNAL_TAGS}
        version: PromptVersion = await run_in_threadpool(
            lambda: self.store.create_version(
                name,
                template,
                commit_message=description,
                tags=user_tags,
                response_format=response_format,
                model_config=model_config,
                create_prompt=False,
            )
        )
        await self.state.after_write()
        return version_json(version, [])

    async def get_model_version(self, name: str, version: int) -> Entity:
        cached = (await self._catalog()).version(name, version)
        return version_json(cached.version, cached.aliases)

    async def get_model_version_by_alias(self, name: str, alias: str) -> Entity:
        cached = (await self._catalog()).by_alias(name, alias)
        return version_json(cached.version, cached.aliases)

    async def update_model_version(self, name: str, version: int, description: str | None) -> Entity:
        await self.get_model_version(name, version)  # a missing one is the 404
        raise _immutable(name, version, "change the description (commit message) of")

    async def delete_model_version(self, name: str, version: int) -> None:
        await self.get_model_version(name, version)
        raise _immutable(name, version, "delete")

    async def set_model_version_tag(self, name: str, version: int, key: str, value: str | None) -> None:
        await self.get_model_version(name, version)
        raise _immutable(name, version, f"change the tag {key[:100]!r} of")

    async def set_alias(self, name: str, alias: str, version: int) -> None:
        await run_in_threadpool(self.store.set_alias, name, alias, version)
        await self.state.after_write()

    async def delete_alias(self, name: str, alias: str) -> None:
        await run_in_threadpool(self.store.delete_alias, name, alias)
        await self.state.after_write()

    async def download_uri(self, name: str, version: int) -> str:
        await self.get_model_version(name, version)
        raise InvalidParameter(
            f"Prompt {name!r} has no artifacts to download: load it with mlflow.genai.load_prompt('prompts:/{name}/"
            f"{version}') or GET /api/prompts/{name}/versions/{version}."
        )
