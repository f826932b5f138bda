"""The model registry: registered models, their numbered versions, and aliases pointing at versions.

MLflow's rules: versions count up from 1 per model and are never reused; an alias names one
version of one model; ``latest`` is built in and always means the highest version. A deleted version
keeps its row as a tombstone (no source, no flavor; MLflow keeps its rows too), so its number is never
given again; every read skips tombstones. Deleting a model deletes its versions and aliases with it.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine, Row

from gateway.errors import AlreadyExists, InvalidParameter, NotFound
from gateway.refs import LATEST, ModelRef, validate_alias, validate_model_name
from gateway.store.engine import begin_read, begin_write
from gateway.store.migrations import open_migrated_engine
from gateway.store.schema import model_aliases, model_versions, registered_models, store_revision

_rm, _mv, _ma = registered_models, model_versions, model_aliases
_TOMBSTONE = ""  # the flavor of a deleted version: create_version refuses an empty flavor
_live = _mv.c.flavor != _TOMBSTONE


@dataclasses.dataclass(frozen=True, slots=True)
class RegisteredModel:
    """A registered model; ``aliases`` maps alias → version, ``latest_version`` is None until one exists."""

    name: str
    description: str | None
    tags: dict[str, str]
    created_at: int
    updated_at: int
    aliases: dict[str, int]
    latest_version: int | None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True, slots=True)
class ModelVersion:
    """One immutable version of a registered model: where its package lives and how to load it."""

    name: str
    version: int
    source: str
    flavor: str
    signature: dict[str, Any] | None
    tags: dict[str, str]
    description: str | None
    created_at: int
    aliases: list[str]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True, slots=True)
class RegistrySnapshot:
    """Everything a gateway replica needs to resolve model references, read in one transaction.

    ``aliases`` holds a ``latest`` entry for every model that has a version.
    """

    revision: int
    versions: dict[tuple[str, int], ModelVersion]
    aliases: dict[tuple[str, str], int]

    def find(self, ref: ModelRef) -> ModelVersion | None:
        version = ref.version
        if version is None and ref.alias is not None:
            version = self.aliases.get((ref.name, LATEST if ref.alias.lower() == LATEST else ref.alias))
        return None if version is None else self.versions.get((ref.name, version))


class RegistryStore:
    """Registry queries over one engine (SQLite or PostgreSQL); safe to share between threads.

    Writes are serialized per model (PostgreSQL: the model's row lock; SQLite: the database write
    lock), so concurrent registrations get consecutive version numbers on any number of replicas.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def open(cls, uri: str) -> RegistryStore:
        """Open the store at ``uri`` and bring its schema up to date."""
        return cls(open_migrated_engine(uri))

    def close(self) -> None:
        self.engine.dispose()

    # -- registered models ---------------------------------------------------------------------

    def create_model(
        self, name: str, description: str | None = None, tags: Mapping[str, str] | None = None
    ) -> RegisteredModel:
        validate_model_name(name)
        tags_json = _dump_tags(tags)
        now = _now_ms()
        try:
            with begin_write(self.engine) as conn:
                conn.execute(_rm.insert().values(_model_values(name, description, tags_json, now)))
                _bump_revision(conn)
        except sa.exc.IntegrityError:
            # Also the outcome of a race: the loser's INSERT hits the winner's primary key.
            raise AlreadyExists(f"Registered model {name!r} already exists.") from None
        return RegisteredModel(name, description, json.loads(tags_json), now, now, {}, None)

    def get_model(self, name: str) -> RegisteredModel:
        with begin_read(self.engine) as conn:
            models = _read_models(conn, name)
        if not models:
            raise NotFound(_no_model(name))
        return models[0]

    def list_models(self) -> list[RegisteredModel]:
        with begin_read(self.engine) as conn:
            return _read_models(conn, None)

    def update_model(self, name: str, *, description: str | None) -> RegisteredModel:
        with begin_write(self.engine) as conn:
            _lock_model(conn, name)
            conn.execute(_rm.update().where(_rm.c.name == name).values(description=description))
            _touch_model(conn, name, _now_ms())
            return _read_models(conn, name)[0]

    def set_model_tag(self, name: str, key: str, value: str | None) -> None:
        """Set tag ``key`` of a model to ``value``; None deletes it (a missing tag is no error, as in MLflow)."""
        with begin_write(self.engine) as conn:
            _lock_model(conn, name)
            row = conn.execute(sa.select(_rm.c.tags).where(_rm.c.name == name)).one()
            tags = _with_tag(json.loads(row.tags), key, value)
            conn.execute(_rm.update().where(_rm.c.name == name).values(tags=tags))
            _touch_model(conn, name, _now_ms())

    def delete_model(self, name: str) -> None:
        """Delete a model with its versions and aliases (its version numbers start again from 1)."""
        with begin_write(self.engine) as conn:
            _lock_model(conn, name)
            for table in (_ma, _mv, _rm):  # aliases name versions, versions name the model
                conn.execute(table.delete().where(table.c.name == name))
            _bump_revision(conn)

    # -- versions --------------------------------------------------------------------------------

    def create_version(
        self,
        name: str,
        *,
        source: str,
        flavor: str,
        signature: Mapping[str, Any] | None = None,
        description: str | None = None,
        tags: Mapping[str, str] | None = None,
        create_model: bool = False,
    ) -> ModelVersion:
        """Register the next version of ``name``; with ``create_model=True`` a missing model is created."""
        validate_model_name(name)
        for field, value in (("source", source), ("flavor", flavor)):
            if not isinstance(value, str) or not value:
                raise InvalidParameter(f"Model version field {field!r} must be a non-empty string.")
        now = _now_ms()
        values: dict[str, Any] = {"name": name, "source": source, "flavor": flavor, "created_at": now}
        values.update(description=description, signature=_dump_signature(signature), tags=_dump_tags(tags))
        with begin_write(self.engine) as conn:
            if create_model:
                insert = _insert_ignoring_duplicates(conn, _rm)
                conn.execute(insert.values(_model_values(name, None, "{}", now)))
            _lock_model(conn, name)
            latest = conn.execute(sa.select(sa.func.max(_mv.c.version)).where(_mv.c.name == name)).scalar()
            values["version"] = (latest or 0) + 1
            conn.execute(_mv.insert().values(values))
            _touch_model(conn, name, now)
        return _version_from_row(values, [])

    def get_version(self, name: str, version: int) -> ModelVersion:
        with begin_read(self.engine) as conn:
            return _read_version(conn, name, version)

    def update_version(self, name: str, version: int, *, description: str | None) -> ModelVersion:
        with begin_write(self.engine) as conn:
            _lock_model(conn, name)
            _read_version(conn, name, version)  # raises NotFound naming what is missing
            conn.execute(_mv.update().where(_version_is(name, version)).values(description=description))
            _touch_model(conn, name, _now_ms())
            return _read_version(conn, name, version)

    def set_version_tag(self, name: str, version: int, key: str, value: str | None) -> None:
        """Set tag ``key`` of a version to ``value``; None deletes it (a missing tag is no error, as in MLflow).
        The serving tags (``gateway.max_batch_rows``...) are read when a version loads: a change applies to
        its next load."""
        with begin_write(self.engine) as conn:
            _lock_model(conn, name)
            tags = _with_tag(_read_version(conn, name, version).tags, key, value)
            conn.execute(_mv.update().where(_version_is(name, version)).values(tags=tags))
            _touch_model(conn, name, _now_ms())

    def delete_version(self, name: str, version: int) -> None:
        """Delete a version and the aliases naming it; its row stays as a tombstone, so the number is not reused."""
        with begin_write(self.engine) as conn:
            _lock_model(conn, name)
            _read_version(conn, name, version)
            conn.execute(_ma.delete().where((_ma.c.name == name) & (_ma.c.version == version)))
            tombstone = {"source": "", "flavor": _TOMBSTONE, "signature": None, "tags": "{}", "description": None}
            conn.execute(_mv.update().where(_version_is(name, version)).values(tombstone))
            _touch_model(conn, name, _now_ms())

    def list_versions(self, name: str) -> list[ModelVersion]:
        with begin_read(self.engine) as conn:
            if not _model_exists(conn, name):
                raise NotFound(_no_model(name))
            aliases = _aliases_by_version(conn, name)
            rows = conn.execute(sa.select(_mv).where((_mv.c.name == name) & _live).order_by(_mv.c.version))
            return [_version_from_row(row, aliases.get((name, row.version), [])) for row in rows]

    # -- aliases ---------------------------------------------------------------------------------

    def set_alias(self, name: str, alias: str, version: int) -> ModelVersion:
        """Point ``alias`` at ``version`` (moving it if it exists); returns the version it now names."""
        validate_alias(alias)
        with begin_write(self.engine) as conn:
            _lock_model(conn, name)
            _read_version(conn, name, version)  # raises NotFound naming the version
            where = (_ma.c.name == name) & (_ma.c.alias == alias)
            if not conn.execute(_ma.update().where(where).values(version=version)).rowcount:
                conn.execute(_ma.insert().values(name=name, alias=alias, version=version))
            _touch_model(conn, name, _now_ms())
            return _read_version(conn, name, version)

    def delete_alias(self, name: str, alias: str) -> None:
        validate_alias(alias)
        with begin_write(self.engine) as conn:
            _lock_model(conn, name)
            where = (_ma.c.name == name) & (_ma.c.alias == alias)
            if not conn.execute(_ma.delete().where(where)).rowcount:
                raise NotFound(f"Registered model {name!r} has no alias {alias!r}.")
            _touch_model(conn, name, _now_ms())

    def get_version_by_alias(self, name: str, alias: str) -> ModelVersion:
        """The version ``alias`` names; ``latest`` (any case) is the highest version."""
        with begin_read(self.engine) as conn:
            if alias.lower() == LATEST:
                query = sa.select(sa.func.max(_mv.c.version)).where((_mv.c.name == name) & _live)
                missing = f"Registered model {name!r} has no versions."
            else:
                query = sa.select(_ma.c.version).where((_ma.c.name == name) & (_ma.c.alias == alias))
                missing = f"Registered model {name!r} has no alias {alias!r}."
            version = conn.execute(query).scalar()
            if version is None:
                raise NotFound(missing if _model_exists(conn, name) else _no_model(name))
            return _read_version(conn, name, version)

    def resolve(self, ref: ModelRef) -> ModelVersion:
        if ref.version is not None:
            return self.get_version(ref.name, ref.version)
        if ref.alias is None:
            raise InvalidParameter(f"Model reference {ref.name!r} names neither a version nor an alias.")
        return self.get_version_by_alias(ref.name, ref.alias)

    # -- change tracking -------------------------------------------------------------------------

    def revision(self) -> int:
        """A counter that every registry write increments: poll it, reload on change."""
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(store_revision.c.revision)).scalar_one())

    def snapshot(self) -> RegistrySnapshot:
        with begin_read(self.engine) as conn:
            revision = int(conn.execute(sa.select(store_revision.c.revision)).scalar_one())
            by_version = _aliases_by_version(conn, None)
            aliases = {(n, alias): v for (n, v), names in by_version.items() for alias in names}
            versions: dict[tuple[str, int], ModelVersion] = {}
            for row in conn.execute(sa.select(_mv).where(_live).order_by(_mv.c.name, _mv.c.version)):
                key = (row.name, row.version)
                versions[key] = _version_from_row(row, by_version.get(key, []))
                aliases[(row.name, LATEST)] = row.version  # ordered by version: the last one wins
        return RegistrySnapshot(revision, versions, aliases)


# -- helpers (all take a connection inside the caller's transaction) --------------------------------


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _no_model(name: str) -> str:
    return f"Registered model {name!r} not found."


def _version_is(name: str, version: int) -> Any:
    return (_mv.c.name == name) & (_mv.c.version == version)


def _with_tag(tags: Mapping[str, str], key: str, value: str | None) -> str:
    """``tags`` with ``key`` set to ``value`` (None: removed), dumped."""
    changed = dict(tags)
    if value is None:
        changed.pop(key, None)
    else:
        changed[key] = value
    return _dump_tags(changed)


def _model_exists(conn: Connection, name: str) -> bool:
    return conn.execute(sa.select(_rm.c.name).where(_rm.c.name == name)).first() is not None


def _model_values(name: str, description: str | None, tags_json: str, now: int) -> dict[str, Any]:
    return {"name": name, "description": description, "tags": tags_json, "created_at": now, "updated_at": now}


def _insert_ignoring_duplicates(conn: Connection, table: sa.Table) -> Any:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing()


def _lock_model(conn: Connection, name: str) -> None:
    # FOR UPDATE holds the model's row until commit, so one writer at a time computes max(version)+1.
    # SQLite renders no FOR UPDATE; BEGIN IMMEDIATE already holds the whole database.
    query = sa.select(_rm.c.name).where(_rm.c.name == name).with_for_update()
    if conn.execute(query).first() is None:
        raise NotFound(_no_model(name))


def _touch_model(conn: Connection, name: str, now: int) -> None:
    conn.execute(_rm.update().where(_rm.c.name == name).values(updated_at=now))
    _bump_revision(conn)


def _bump_revision(conn: Connection) -> None:
    # Last statement of each write: the counter's row lock is then held only until commit, and
    # always after any model row lock, so the two locks are taken in one order and cannot deadlock.
    conn.execute(store_revision.update().values(revision=store_revision.c.revision + 1))


def _read_models(conn: Connection, name: str | None) -> list[RegisteredModel]:
    """All models, or the one called ``name``, each with its aliases and highest version."""
    models = sa.select(_rm).order_by(_rm.c.name)
    latest = sa.select(_mv.c.name, sa.func.max(_mv.c.version)).where(_live).group_by(_mv.c.name)
    if name is not None:
        models, latest = models.where(_rm.c.name == name), latest.where(_mv.c.name == name)
    aliases: dict[str, dict[str, int]] = defaultdict(dict)
    for (model, version), names in _aliases_by_version(conn, name).items():
        aliases[model].update(dict.fromkeys(names, version))
    latest_by_model: dict[str, int] = dict(conn.execute(latest).tuples().all())
    return [
        RegisteredModel(
            row.name,
            row.description,
            json.loads(row.tags),
            row.created_at,
            row.updated_at,
            dict(sorted(aliases[row.name].items())),
            latest_by_model.get(row.name),
        )
        for row in conn.execute(models)
    ]


def _read_version(conn: Connection, name: str, version: int) -> ModelVersion:
    row = conn.execute(sa.select(_mv).where((_mv.c.name == name) & (_mv.c.version == version) & _live)).first()
    if row is None:
        missing = f"Registered model {name!r} has no version {version}."
        raise NotFound(missing if _model_exists(conn, name) else _no_model(name))
    aliases = conn.execute(
        sa.select(_ma.c.alias).where((_ma.c.name == name) & (_ma.c.version == version)).order_by(_ma.c.alias)
    )
    return _version_from_row(row, list(aliases.scalars()))


def _aliases_by_version(conn: Connection, name: str | None) -> dict[tuple[str, int], list[str]]:
    query = sa.select(_ma).order_by(_ma.c.alias)
    if name is not None:
        query = query.where(_ma.c.name == name)
    result: dict[tuple[str, int], list[str]] = defaultdict(list)
    for row in conn.execute(query):
        result[(row.name, row.version)].append(row.alias)
    return result


def _version_from_row(row: Row[Any] | Mapping[str, Any], aliases: list[str]) -> ModelVersion:
    values = row._mapping if isinstance(row, Row) else row
    signature = values["signature"]
    return ModelVersion(
        values["name"],
        values["version"],
        values["source"],
        values["flavor"],
        None if signature is None else json.loads(signature),
        json.loads(values["tags"]),
        values["description"],
        values["created_at"],
        aliases,
    )


def _dump_tags(tags: Mapping[str, str] | None) -> str:
    if tags is None:
        return "{}"
    if not isinstance(tags, Mapping):
        raise InvalidParameter(f"Tags must be an object of strings, got {type(tags).__name__}.")
    for key, value in tags.items():
        if not isinstance(key, str) or not key or not isinstance(value, str):
            raise InvalidParameter(f"Tag {key!r} must have a non-empty string key and a string value.")
    return json.dumps(dict(tags), sort_keys=True)


def _dump_signature(signature: Mapping[str, Any] | None) -> str | None:
    if signature is None:
        return None
    if not isinstance(signature, Mapping):
        raise InvalidParameter(f"A model signature must be an object, got {type(signature).__name__}.")
    try:
        return json.dumps(dict(signature), sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise InvalidParameter(f"A model signature must be JSON-serializable: {exc}") from None
