"""The model registry behind MLflow's REST API: ``RegistryBackend`` over ``RegistryStore``.

Versions are registered as by ``POST /api/registry/models/{name}/versions`` (gateway/registration.py): the
source must be a model package under an artifact root, validated before it is written, so a version the
MLflow client creates is one the gateway can serve. Every write tells this worker's view at once and the
other replicas through Redis or their next refresh, as our own registry API does.
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool

from gateway.api.mlflow_entities import Entity, model_version_json, registered_model_json
from gateway.config import BATCH_PARSERS
from gateway.config_values import ConfigError
from gateway.errors import InvalidParameter, NotFound
from gateway.refs import validate_model_name
from gateway.registration import register_version
from gateway.serving.batch_settings import TAG_KEYS, TAG_PREFIX
from gateway.state import GatewayState
from gateway.store.registry import ModelVersion, RegisteredModel


def version_json(version: ModelVersion) -> Entity:
    return model_version_json(
        version.name,
        version.version,
        source=version.source,
        description=version.description,
        tags=version.tags,
        aliases=version.aliases,
        created_at=version.created_at,
        updated_at=version.created_at,
    )


def model_json(model: RegisteredModel, latest: ModelVersion | None) -> Entity:
    return registered_model_json(
        model.name,
        description=model.description,
        tags=model.tags,
        created_at=model.created_at,
        updated_at=model.updated_at,
        aliases=model.aliases,
        latest=None if latest is None else version_json(latest),
    )


def check_serving_tags(tags: dict[str, str]) -> None:
    """Refuse a version tag ``gateway.<key>`` (a serving setting, read when the version loads) whose value
    would fail that load, naming it (gateway/serving/batch_settings.py)."""
    for key in TAG_KEYS:
        tag = TAG_PREFIX + key
        if tag in tags:
            try:
                BATCH_PARSERS[key](f"tag {tag}", tags[tag])
            except ConfigError as exc:
                raise InvalidParameter(f"Invalid serving tag: {exc}") from None


class ModelBackend:
    """MLflow's registry calls on the gateway's model registry (the route's registry scope is enough)."""

    prompts = False
    read_scope: str | None = None
    write_scope: str | None = None

    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self.store = state.store

    async def _changed(self) -> None:
        await self.state.registry_changed()

    async def _call(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        return await run_in_threadpool(method, *args, **kwargs)

    async def has(self, name: str) -> bool:
        try:
            await self._call(self.store.get_model, name)
        except NotFound:
            return False
        return True

    async def registered_models(self) -> list[Entity]:
        models: list[RegisteredModel] = await self._call(self.store.list_models)
        versions = (await self._call(self.store.snapshot)).versions
        return [model_json(m, versions.get((m.name, m.latest_version or 0))) for m in models]

    async def model_versions(self) -> list[Entity]:
        snapshot = await self._call(self.store.snapshot)
        return [version_json(v) for v in snapshot.versions.values()]

    async def create_registered_model(self, name: str, description: str | None, tags: dict[str, str]) -> Entity:
        validate_model_name(name)
        model = await self._call(self.store.create_model, name, description, tags)
        await self._changed()
        return model_json(model, None)

    async def get_registered_model(self, name: str) -> Entity:
        model: RegisteredModel = await self._call(self.store.get_model, name)
        latest = None
        if model.latest_version is not None:
            latest = await self._call(self.store.get_version, name, model.latest_version)
        return model_json(model, latest)

    async def update_registered_model(self, name: str, description: str | None) -> Entity:
        await self._call(self.store.update_model, name, description=description)
        await self._changed()
        return await self.get_registered_model(name)

    async def delete_registered_model(self, name: str) -> None:
        await self._call(self.store.delete_model, name)
        await self._changed()

    async def set_registered_model_tag(self, name: str, key: str, value: str | None) -> None:
        await self._call(self.store.set_model_tag, name, key, value)
        await self._changed()

    async def create_model_version(
        self, name: str, source: str, description: str | None, tags: dict[str, str]
    ) -> Entity:
        check_serving_tags(tags)
        settings = self.state.settings
        version: ModelVersion = await self._call(
            register_version,
            self.store,
            name,
            source,
            artifact_roots=settings.artifact_roots,
            description=description,
            tags=tags,
        )
        await self._changed()
        return version_json(version)

    async def get_model_version(self, name: str, version: int) -> Entity:
        return version_json(await self._call(self.store.get_version, name, version))

    async def get_model_version_by_alias(self, name: str, alias: str) -> Entity:
        return version_json(await self._call(self.store.get_version_by_alias, name, alias))

    async def update_model_version(self, name: str, version: int, description: str | None) -> Entity:
        updated = await self._call(self.store.update_version, name, version, description=description)
        await self._changed()
        return version_json(updated)

    async def delete_model_version(self, name: str, version: int) -> None:
        await self._call(self.store.delete_version, name, version)
        await self._changed()

    async def set_model_version_tag(self, name: str, version: int, key: str, value: str | None) -> None:
        if value is not None:
            check_serving_tags({key: value})
        await self._call(self.store.set_version_tag, name, version, key, value)
        await self._changed()

    async def set_alias(self, name: str, alias: str, version: int) -> None:
        await self._call(self.store.set_alias, name, alias, version)
        await self._changed()

    async def delete_alias(self, name: str, alias: str) -> None:
        await self._call(self.store.delete_alias, name, alias)
        await self._changed()

    async def download_uri(self, name: str, version: int) -> str:
        found: ModelVersion = await self._call(self.store.get_version, name, version)
        return found.source
