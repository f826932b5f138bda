"""MLflow's registry entities as its REST API writes them, and the interface behind the MLflow API.

``registered_model_json`` and ``model_version_json`` build the JSON that MLflow's server answers (its
``message_to_json`` of the protos in mlflow/protos/model_registry.proto): version numbers as strings,
timestamps in epoch milliseconds, tags as ``[{"key", "value"}]``, an empty field left out. Every version is
``READY`` in stage ``None``; ``run_id`` and ``run_link`` are empty (this registry has no runs).

``RegistryBackend`` is what the MLflow API (gateway/api/mlflow_registry.py) translates each call into. MLflow
keeps prompts as registered models tagged ``mlflow.prompt.is_prompt``, in one namespace with models; this
gateway keeps them in two registries, so there are two implementations: the model registry's
(gateway/api/mlflow_models.py) and the prompt registry's (prompts/mlflow_api.py, handed to the app by
gateway.app, since nothing else under gateway/ may import prompts).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from gateway.api.mlflow_search import IS_PROMPT_TAG
from gateway.errors import GatewayError

__all__ = ["IS_PROMPT_TAG", "RegistryBackend", "ResourceAlreadyExists", "model_version_json", "registered_model_json"]

Entity = dict[str, Any]


class ResourceAlreadyExists(GatewayError):
    """MLflow's server answers an existing name with 400 (our own API: 409, gateway.errors.AlreadyExists)."""

    status = 400
    error_code = "RESOURCE_ALREADY_EXISTS"


def tags_json(tags: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"key": key, "value": value} for key, value in sorted(tags.items())]


def registered_model_json(
    name: str,
    *,
    description: str | None,
    tags: Mapping[str, str],
    created_at: int,
    updated_at: int,
    aliases: Mapping[str, int],
    latest: Entity | None,
) -> Entity:
    """A ``RegisteredModel``; ``latest`` is its highest version (MLflow's ``latest_versions``: stage None's)."""
    data: Entity = {"name": name, "creation_timestamp": created_at, "last_updated_timestamp": updated_at}
    if description is not None:
        data["description"] = description
    if latest is not None:
        data["latest_versions"] = [latest]
    if tags:
        data["tags"] = tags_json(tags)
    if aliases:
        data["aliases"] = [{"alias": alias, "version": str(version)} for alias, version in sorted(aliases.items())]
    return data


def model_version_json(
    name: str,
    version: int,
    *,
    source: str,
    description: str | None,
    tags: Mapping[str, str],
    aliases: Iterable[str],
    created_at: int,
    updated_at: int,
) -> Entity:
    """A ``ModelVersion``, always ``READY`` (registration is synchronous here)."""
    data: Entity = {
        "name": name,
        "version": str(version),
        "creation_timestamp": created_at,
        "last_updated_timestamp": updated_at,
        "current_stage": "None",
        "source": source,
        "run_id": "",
        "status": "READY",
        "run_link": "",
    }
    if description is not None:
        data["description"] = description
    if tags:
        data["tags"] = tags_json(tags)
    names = sorted(aliases)
    if names:
        data["aliases"] = names
    return data


class RegistryBackend(Protocol):
    """One registry behind MLflow's model-registry calls; answers are MLflow JSON (the builders above).

    ``prompts``: whether it holds prompts (MLflow's registered models tagged ``mlflow.prompt.is_prompt``).
    ``read_scope`` / ``write_scope``: the key scope a call needs beyond its route's own (``registry:read`` /
    ``registry:write``), None for none. Tag setters take None as the value to delete the tag. Errors are
    GatewayErrors (NotFound for a missing name, version or alias, InvalidParameter for what this registry
    does not do, naming why)."""

    prompts: bool
    read_scope: str | None
    write_scope: str | None

    async def has(self, name: str) -> bool: ...
    async def registered_models(self) -> list[Entity]: ...
    async def model_versions(self) -> list[Entity]: ...
    async def create_registered_model(self, name: str, description: str | None, tags: dict[str, str]) -> Entity: ...
    async def get_registered_model(self, name: str) -> Entity: ...
    async def update_registered_model(self, name: str, description: str | None) -> Entity: ...
    async def delete_registered_model(self, name: str) -> None: ...
    async def set_registered_model_tag(self, name: str, key: str, value: str | None) -> None: ...
    async def create_model_version(
        self, name: str, source: str, description: str | None, tags: dict[str, str]
    ) -> Entity: ...
    async def get_model_version(self, name: str, version: int) -> Entity: ...
    async def get_model_version_by_alias(self, name: str, alias: str) -> Entity: ...
    async def update_model_version(self, name: str, version: int, description: str | None) -> Entity: ...
    async def delete_model_version(self, name: str, version: int) -> None: ...
    async def set_model_version_tag(self, name: str, version: int, key: str, value: str | None) -> None: ...
    async def set_alias(self, name: str, alias: str, version: int) -> None: ...
    async def delete_alias(self, name: str, alias: str) -> None: ...
    async def download_uri(self, name: str, version: int) -> str: ...
