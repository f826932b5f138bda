"""Every table of the store, in one MetaData: the current shape, as the last migration leaves it.

Migrations (``gateway/store/migrations.py``) are what create and change tables; this module is
what queries are written against. When a migration changes a table, change it here too (a test
compares a migrated database with this MetaData).

Conventions: timestamps are integer epoch milliseconds; tags and signatures are JSON text (the
same on SQLite and PostgreSQL, and read whole, never queried into).
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

schema_version = sa.Table(
    "schema_version",
    metadata,
    # One row, id = 1: the number of the last migration applied.
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("version", sa.Integer, nullable=False),
)

store_revision = sa.Table(
    "store_revision",
    metadata,
    # One row, id = 1, incremented by every write transaction that changes the registry, so a
    # replica polls one integer to learn whether it must reload its alias cache.
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("revision", sa.BigInteger, nullable=False),
)

registered_models = sa.Table(
    "registered_models",
    metadata,
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("description", sa.Text, nullable=True),
    sa.Column("tags", sa.Text, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)

model_versions = sa.Table(
    "model_versions",
    metadata,
    sa.Column("name", sa.String(255), sa.ForeignKey("registered_models.name"), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("flavor", sa.String(64), nullable=False),
    sa.Column("signature", sa.Text, nullable=True),
    sa.Column("tags", sa.Text, nullable=False),
    sa.Column("description", sa.Text, nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
)

model_aliases = sa.Table(
    "model_aliases",
    metadata,
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("alias", sa.String(255), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    # Pointing at (name, version) rather than name alone: an alias can never name a missing version.
    sa.ForeignKeyConstraint(["name", "version"], ["model_versions.name", "model_versions.version"]),
)
