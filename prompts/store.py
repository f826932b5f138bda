"""Prompt registry writes, and the one read every replica makes: the whole registry as a Catalog.

Versions count up from 1 per prompt and are never changed or reused. Concurrent writers to one
prompt are serialized the way the model registry does it (``gateway.store.registry``): on
PostgreSQL by the prompt's row lock (``SELECT ... FOR UPDATE``), on SQLite by the database write
lock (``BEGIN IMMEDIATE``), so concurrent creators on any number of replicas get consecutive
numbers. Every write bumps the shared ``store_revision``, which is what replicas poll (and what
Redis announces) to know they must reload.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from gateway.errors import AlreadyExists, InvalidParameter, NotFound
from gateway.store.engine import begin_read, begin_write
from gateway.store.migrations import open_migrated_engine
from gateway.store.schema import prompt_aliases, prompt_versions, registered_prompts, store_revision
from prompts.catalog import Catalog, Prompt, PromptVersion
from prompts.refs import validate_alias, validate_prompt_name
from prompts.templates import compile_template, validate_template

_rp, _pv, _pa = registered_prompts, prompt_versions, prompt_aliases
_UNSET: Any = object()

# MLflow's PromptModelConfig fields and their checks; any other key is kept as an extra parameter.
_MODEL_CONFIG_CHECKS: dict[str, tuple[str, Any]] = {
    "provider": ("a string", lambda v: isinstance(v, str)),
    "model_name": ("a string", lambda v: isinstance(v, str)),
    "temperature": ("a number >= 0", lambda v: _is_number(v) and v >= 0),
    "max_tokens": ("an integer > 0", lambda v: _is_int(v) and v > 0),
    "top_p": ("a number from 0 to 1", lambda v: _is_number(v) and 0 <= v <= 1),
    "top_k": ("an integer > 0", lambda v: _is_int(v) and v > 0),
    "frequency_penalty": ("a number", lambda v: _is_number(v)),
    "presence_penalty": ("a number", lambda v: _is_number(v)),
    "stop_sequences": ("a list of strings", lambda v: isinstance(v, list) and all(isinstance(s, str) for s in v)),
}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class PromptStore:
    """Prompt registry queries over one engine (SQLite or PostgreSQL); safe to share between threads."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def open(cls, uri: str) -> PromptStore:
        """Open the store at ``uri`` and bring its schema up to date (the CLI; the app shares its engine)."""
        return cls(open_migrated_engine(uri))

    def close(self) -> None:
        self.engine.dispose()

    # -- prompts ---------------------------------------------------------------------------------

    def create_prompt(self, name: str, description: str | None = None, tags: Mapping[str, str] | None = None) -> Prompt:
        validate_prompt_name(name)
        _check_optional_str(description, "description")
        tags_json = _dump_tags(tags, "tags")
        now = _now_ms()
        try:
            with begin_write(self.engine) as conn:
                conn.execute(_rp.insert().values(_prompt_values(name, description, tags_json, now)))
                _bump_revision(conn)
        except sa.exc.IntegrityError:
            raise AlreadyExists(f"Prompt {name!r} already exists.") from None
        return Prompt(name, description, json.loads(tags_json), now, now)

    def update_prompt(self, name: str, *, description: Any = _UNSET, tags: Any = _UNSET) -> Prompt:
        """Change a prompt's description and/or replace its tags (versions never change)."""
        values: dict[str, Any] = {"updated_at": _now_ms()}
        if description is not _UNSET:
            values["description"] = _check_optional_str(description, "description")
        if tags is not _UNSET:
            values["tags"] = _dump_tags(tags, "tags")
        with begin_write(self.engine) as conn:
            _lock_prompt(conn, name)
            conn.execute(_rp.update().where(_rp.c.name == name).values(values))
            _bump_revision(conn)
            row = conn.execute(sa.select(_rp).where(_rp.c.name == name)).one()
        return Prompt(row.name, row.description, json.loads(row.tags), row.created_at, row.updated_at)

    def set_tag(self, name: str, key: str, value: str | None) -> None:
        """Set one tag of a prompt (None: delete it; a missing tag is no error, as in MLflow), under its row
        lock, so concurrent setters of different tags all land."""
        with begin_write(self.engine) as conn:
            _lock_prompt(conn, name)
            tags = json.loads(conn.execute(sa.select(_rp.c.tags).where(_rp.c.name == name)).scalar_one())
            if value is None:
                tags.pop(key, None)
            else:
                tags[key] = value
            conn.execute(_rp.update().where(_rp.c.name == name).values(tags=_dump_tags(tags, "tags")))
            _touch_prompt(conn, name, _now_ms())

    def delete_prompt(self, name: str) -> None:
        """Delete a prompt that has no version yet (what a failed first registration leaves). A prompt with
        versions stays: versions are immutable, and clients cache them by number."""
        with begin_write(self.engine) as conn:
            _lock_prompt(conn, name)
            count = conn.execute(sa.select(sa.func.count()).where(_pv.c.name == name)).scalar_one()
            if count:
                raise InvalidParameter(
                    f"Prompt {name!r} has {count} version(s) and is not deleted: prompt versions are immutable "
                    "and may be cached by number. Move its aliases instead."
                )
            conn.execute(_rp.delete().where(_rp.c.name == name))
            _bump_revision(conn)

    # -- versions --------------------------------------------------------------------------------

    def create_version(
        self,
        name: str,
        template: Any,
        *,
        commit_message: str | None = None,
        tags: Mapping[str, str] | None = None,
        response_format: Mapping[str, Any] | None = None,
        model_config: Mapping[str, Any] | None = None,
        create_prompt: bool = True,
        alias: str | None = None,
    ) -> PromptVersion:
        """Register the next version of ``name``; a missing prompt is created unless ``create_prompt`` is False.
        ``alias``, when given, points at the new version from the same transaction."""
        if alias is not None:
            validate_alias(alias)
        values = _version_values(name, template, commit_message, tags, response_format, model_config)
        with begin_write(self.engine) as conn:
            if create_prompt:
                _create_prompt_if_absent(conn, name, values["created_at"])
            _lock_prompt(conn, name)
            latest = conn.execute(sa.select(sa.func.max(_pv.c.version)).where(_pv.c.name == name)).scalar()
            values["version"] = (latest or 0) + 1
            conn.execute(_pv.insert().values(values))
            if alias is not None:
                _point_alias(conn, name, alias, values["version"])
            _touch_prompt(conn, name, values["created_at"])
        return _version_from_values(values)

    def seed_version(
        self,
        name: str,
        template: Any,
        *,
        alias: str,
        description: str | None = None,
        commit_message: str | None = None,
        tags: Mapping[str, str] | None = None,
        response_format: Mapping[str, Any] | None = None,
        model_config: Mapping[str, Any] | None = None,
    ) -> PromptVersion | None:
        """Version 1 of ``name`` with ``alias`` pointing at it, unless the prompt already has a version:
        then nothing is written and None is returned. One transaction under the prompt's row lock, so any
        number of replicas seeding the same prompt at once create it once (the built-in judges)."""
        validate_alias(alias)
        _check_optional_str(description, "description")
        values = _version_values(name, template, commit_message, tags, response_format, model_config)
        with begin_write(self.engine) as conn:
            _create_prompt_if_absent(conn, name, values["created_at"], description)
            _lock_prompt(conn, name)
            if conn.execute(sa.select(_pv.c.version).where(_pv.c.name == name).limit(1)).first() is not None:
                return None
            values["version"] = 1
            conn.execute(_pv.insert().values(values))
            _point_alias(conn, name, alias, 1)
            _touch_prompt(conn, name, values["created_at"])
        return _version_from_values(values)

    # -- aliases ---------------------------------------------------------------------------------

    def set_alias(self, name: str, alias: str, version: int) -> None:
        """Point ``alias`` at ``version``, moving it if it already names another one."""
        validate_alias(alias)
        with begin_write(self.engine) as conn:
            _lock_prompt(conn, name)
            exists = sa.select(_pv.c.version).where((_pv.c.name == name) & (_pv.c.version == version))
            if conn.execute(exists).first() is None:
                raise NotFound(f"Prompt {name!r} has no version {version}.")
            _point_alias(conn, name, alias, version)
            _touch_prompt(conn, name, _now_ms())

    def delete_alias(self, name: str, alias: str) -> None:
        validate_alias(alias)
        with begin_write(self.engine) as conn:
            _lock_prompt(conn, name)
            where = (_pa.c.name == name) & (_pa.c.alias == alias)
            if not conn.execute(_pa.delete().where(where)).rowcount:
                raise NotFound(f"Prompt {name!r} has no alias {alias!r}.")
            _touch_prompt(conn, name, _now_ms())

    # -- reads -----------------------------------------------------------------------------------

    def revision(self) -> int:
        """The store-wide change counter (shared with the model registry): poll it, reload on change."""
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(store_revision.c.revision)).scalar_one())

    def load_catalog(self) -> Catalog:
        """Every prompt, version and alias, read in one transaction."""
        with begin_read(self.engine) as conn:
            revision = int(conn.execute(sa.select(store_revision.c.revision)).scalar_one())
            prompts = [
                Prompt(row.name, row.description, json.loads(row.tags), row.created_at, row.updated_at)
                for row in conn.execute(sa.select(_rp))
            ]
            versions = [_version_from_values(row._mapping) for row in conn.execute(sa.select(_pv))]
            aliases = [(row.name, row.alias, row.version) for row in conn.execute(sa.select(_pa))]
        return Catalog(revision, prompts, versions, aliases)


# -- helpers (all take a connection inside the caller's transaction) --------------------------------


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _prompt_values(name: str, description: str | None, tags_json: str, now: int) -> dict[str, Any]:
    return {"name": name, "description": description, "tags": tags_json, "created_at": now, "updated_at": now}


def _create_prompt_if_absent(conn: Connection, name: str, now: int, description: str | None = None) -> None:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    insert = dialect.insert(_rp).on_conflict_do_nothing()
    conn.execute(insert.values(_prompt_values(name, description, "{}", now)))


def _version_values(
    name: str,
    template: Any,
    commit_message: str | None,
    tags: Mapping[str, str] | None,
    response_format: Mapping[str, Any] | None,
    model_config: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """A version's columns, checked (its number is set under the prompt's lock)."""
    validate_prompt_name(name)
    template_type, normalized = validate_template(template)
    variables = compile_template(normalized).variables
    _check_optional_str(commit_message, "commit_message")
    return {
        "name": name,
        "template_type": template_type,
        "template": json.dumps(normalized),
        "variables": json.dumps(list(variables)),
        "commit_message": commit_message,
        "tags": _dump_tags(tags, "tags"),
        "response_format": _dump_object(response_format, "response_format"),
        "model_config": _dump_model_config(model_config),
        "created_at": _now_ms(),
    }


def _lock_prompt(conn: Connection, name: str) -> None:
    # FOR UPDATE holds the prompt's row until commit, so one writer at a time computes max(version)+1.
    # SQLite renders no FOR UPDATE; BEGIN IMMEDIATE already holds the whole database.
    query = sa.select(_rp.c.name).where(_rp.c.name == name).with_for_update()
    if conn.execute(query).first() is None:
        raise NotFound(f"Prompt {name!r} not found.")


def _point_alias(conn: Connection, name: str, alias: str, version: int) -> None:
    where = (_pa.c.name == name) & (_pa.c.alias == alias)
    if not conn.execute(_pa.update().where(where).values(version=version)).rowcount:
        conn.execute(_pa.insert().values(name=name, alias=alias, version=version))


def _touch_prompt(conn: Connection, name: str, now: int) -> None:
    conn.execute(_rp.update().where(_rp.c.name == name).values(updated_at=now))
    _bump_revision(conn)


def _bump_revision(conn: Connection) -> None:
    # Last statement of each write, after the prompt's row lock: the same lock order as the model
    # registry's writes, so the two cannot deadlock on the shared counter.
    conn.execute(store_revision.update().values(revision=store_revision.c.revision + 1))


def _version_from_values(values: Mapping[Any, Any]) -> PromptVersion:
    def load(key: str) -> Any:
        text = values[key]
        return None if text is None else json.loads(text)

    return PromptVersion(
        name=values["name"],
        version=values["version"],
        template_type=values["template_type"],
        template=json.loads(values["template"]),
        variables=tuple(json.loads(values["variables"])),
        commit_message=values["commit_message"],
        tags=json.loads(values["tags"]),
        response_format=load("response_format"),
        model_config=load("model_config"),
        created_at=values["created_at"],
    )


def _check_optional_str(value: Any, field: str) -> Any:
    if value is not None and not isinstance(value, str):
        raise InvalidParameter(f"Field '{field}' must be a string, got {type(value).__name__}.")
    return value


def _dump_tags(tags: Any, field: str) -> str:
    if tags is None:
        return "{}"
    if not isinstance(tags, Mapping):
        raise InvalidParameter(f"Field '{field}' must be an object of strings, got {type(tags).__name__}.")
    for key, value in tags.items():
        if not isinstance(key, str) or not key or not isinstance(value, str):
            raise InvalidParameter(f"Field '{field}': tag {key!r} must have a non-empty string key and a string value.")
    return json.dumps(dict(tags), sort_keys=True)


def _dump_object(value: Any, field: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidParameter(f"Field '{field}' must be a JSON object, got {type(value).__name__}.")
    try:
        return json.dumps(dict(value), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidParameter(f"Field '{field}' must be JSON-serializable: {exc}") from None


def _dump_model_config(config: Any) -> str | None:
    """Check MLflow's PromptModelConfig fields (``model_name``, ``temperature``, ``max_tokens``, ...)."""
    if config is None:
        return None
    if not isinstance(config, Mapping):
        raise InvalidParameter(f"Field 'model_config' must be a JSON object, got {type(config).__name__}.")
    for key, value in config.items():
        check = _MODEL_CONFIG_CHECKS.get(key)
        if check is not None and value is not None and not check[1](value):
            raise InvalidParameter(f"Field 'model_config.{key}' must be {check[0]}, got {value!r}.")
    return _dump_object({k: v for k, v in config.items() if v is not None}, "model_config")
