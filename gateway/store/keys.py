"""Gateway keys in the store (``gateway_keys``, migration 5), and the spend the trace summaries record per key.

A row holds what a key may do and its limits, the sha256 digest of the key and its first characters for
display: never the key, which is shown once when created or rotated (gateway/key_admin.py makes it). Revoking
keeps the row (its name, limits and history stay readable); rotating replaces digest and prefix and keeps the
id, so spans, traces and usage stay the key's. Every replica reads the whole table (``load``) into memory
(gateway/keys.py): a key is never read per request.

Spend is the sum of ``trace_summaries.cost_usd`` over a key's calls since a period's start: the store's record
of what a key spent (gateway/limits/ keeps the live count, in Redis when shared).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Engine, Row

from gateway.errors import AlreadyExists, NotFound
from gateway.store.assessments import now_ms
from gateway.store.engine import begin_read, begin_write
from gateway.store.schema import gateway_keys, trace_summaries

_k, _ts = gateway_keys, trace_summaries
_JSON_LISTS = ("scopes", "models", "routes")
# What create() takes besides the id, digest and prefix (the limits may be None).
LIMIT_FIELDS = ("models", "routes", "rpm", "tpm", "budget_usd", "budget_period", "expires_at")


@dataclasses.dataclass(frozen=True, slots=True)
class StoredKey:
    """One ``gateway_keys`` row (``scopes``, ``models``, ``routes`` decoded)."""

    id: str
    name: str
    digest: str
    prefix: str
    scopes: tuple[str, ...]
    models: tuple[str, ...] | None
    routes: tuple[str, ...] | None
    rpm: int | None
    tpm: int | None
    budget_usd: float | None
    budget_period: str | None
    expires_at: int | None
    revoked_at: int | None
    created_at: int
    updated_at: int
    rotated_at: int | None

    def to_dict(self) -> dict[str, Any]:
        """What the API and the CLI show: everything but the digest."""
        data = dataclasses.asdict(self)
        del data["digest"]
        for name in _JSON_LISTS:
            if data[name] is not None:
                data[name] = list(data[name])
        return data


class KeyStore:
    """The keys table over the store's engine (SQLite or PostgreSQL); safe to share between threads."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(
        self, key_id: str, name: str, digest: str, prefix: str, scopes: Sequence[str], **limits: Any
    ) -> StoredKey:
        """Store a new key; AlreadyExists when ``name`` is taken (by a revoked key too)."""
        unknown = sorted(set(limits) - set(LIMIT_FIELDS))
        if unknown:
            raise ValueError(f"unknown key field(s) {', '.join(unknown)}")
        now = now_ms()
        row: dict[str, Any] = {
            "id": key_id, "name": name, "digest": digest, "prefix": prefix, "scopes": _dump(list(scopes)),
            "created_at": now, "updated_at": now,
            **{field: limits.get(field) for field in LIMIT_FIELDS},
        }  # fmt: skip
        for field in ("models", "routes"):
            row[field] = _dump(list(row[field])) if row[field] is not None else None
        try:
            with begin_write(self.engine) as conn:
                conn.execute(_k.insert().values(row))
        except sa.exc.IntegrityError:
            raise AlreadyExists(f"A key named {name!r} already exists (names stay taken after a revoke).") from None
        return self.get(key_id)

    def load(self) -> list[StoredKey]:
        """Every key, revoked ones included, oldest first."""
        with begin_read(self.engine) as conn:
            rows = conn.execute(sa.select(_k).order_by(_k.c.created_at, _k.c.id)).all()
        return [_key(row) for row in rows]

    def get(self, id_or_name: str) -> StoredKey:
        """The key with this id, or else this name; NotFound otherwise."""
        with begin_read(self.engine) as conn:
            row = conn.execute(sa.select(_k).where(_k.c.id == id_or_name)).first()
            if row is None:
                row = conn.execute(sa.select(_k).where(_k.c.name == id_or_name)).first()
        if row is None:
            raise NotFound(f"No gateway key with id or name {id_or_name[:64]!r}.")
        return _key(row)

    def revoke(self, id_or_name: str) -> StoredKey:
        """Mark the key revoked (again: a no-op that keeps the first time)."""
        key = self.get(id_or_name)
        if key.revoked_at is None:
            now = now_ms()
            with begin_write(self.engine) as conn:
                conn.execute(
                    _k.update()
                    .where(_k.c.id == key.id, _k.c.revoked_at.is_(None))
                    .values(revoked_at=now, updated_at=now)
                )
        return self.get(key.id)

    def rotate(self, id_or_name: str, digest: str, prefix: str) -> StoredKey:
        """Give the key a new secret (its digest and prefix); the old one stops working. A revoked key is not
        rotated (NotFound names why)."""
        key = self.get(id_or_name)
        now = now_ms()
        with begin_write(self.engine) as conn:
            updated = conn.execute(
                _k.update()
                .where(_k.c.id == key.id, _k.c.revoked_at.is_(None))
                .values(digest=digest, prefix=prefix, rotated_at=now, updated_at=now)
            ).rowcount
        if not updated:
            raise NotFound(f"The key {key.name!r} ({key.id}) is revoked: create a new key instead of rotating it.")
        return self.get(key.id)

    def spend_since(self, since_ms: Mapping[str, int], until_ms: int | None = None) -> dict[str, float]:
        """Per key id: the cost of its calls that started at or after its ``since_ms`` (the start of its budget
        period) and before ``until_ms`` (None: any time), summed over the trace summaries. Keys without a call
        are absent."""
        by_start: dict[int, list[str]] = {}
        for key, since in since_ms.items():
            by_start.setdefault(since, []).append(key)
        spent: dict[str, float] = {}
        with begin_read(self.engine) as conn:
            for since, keys in by_start.items():
                query = (
                    sa.select(_ts.c.key_id, sa.func.sum(_ts.c.cost_usd))
                    .where(_ts.c.key_id.in_(keys), _ts.c.started_at >= since)
                    .group_by(_ts.c.key_id)
                )
                if until_ms is not None:
                    query = query.where(_ts.c.started_at < until_ms)
                for key, total in conn.execute(query):
                    spent[key] = float(total or 0.0)
        return spent


def _dump(values: Iterable[str]) -> str:
    return orjson.dumps(list(values)).decode()


def _key(row: Row[Any]) -> StoredKey:
    data = dict(row._mapping)
    data["scopes"] = tuple(orjson.loads(data["scopes"]))
    for name in ("models", "routes"):
        if data[name] is not None:
            data[name] = tuple(orjson.loads(data[name]))
    return StoredKey(**data)
