"""Explicit, ordered schema migrations, applied at start by :func:`migrate`.

``MIGRATIONS[n - 1]`` takes the schema from version ``n - 1`` to ``n``; the number applied is kept
in the one-row ``schema_version`` table (a database without it is at version 0). Rules for adding one:

- append, never edit or reorder a released migration: databases out there already ran it;
- never drop data: add tables and nullable (or defaulted) columns, copy before renaming;
- write the tables as they are at that step (not ``gateway.store.schema``, which keeps moving),
  and update ``schema.py`` to the new shape in the same change.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from gateway.errors import DependencyError
from gateway.store.engine import begin_write, open_engine

Migration = Callable[[Connection], None]

# Key of the PostgreSQL advisory lock that serializes migrations across processes (arbitrary, fixed).
_ADVISORY_LOCK_KEY = 0x6761746577617931  # "gateway1"


def _m0001_registry(conn: Connection) -> None:
    """Registry tables: models, versions, aliases, plus schema_version and store_revision."""
    md = sa.MetaData()
    sa.Table(
        "schema_version",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("version", sa.Integer, nullable=False),
    )
    revision = sa.Table(
        "store_revision",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("revision", sa.BigInteger, nullable=False),
    )
    sa.Table(
        "registered_models",
        md,
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("description", sa.Text, nullable=True),
        sa.Column("tags", sa.Text, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    )
    sa.Table(
        "model_versions",
        md,
        sa.Column("name", sa.String(255), sa.ForeignKey("registered_models.name"), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("flavor", sa.String(64), nullable=False),
        sa.Column("signature", sa.Text, nullable=True),
        sa.Column("tags", sa.Text, nullable=False),
        sa.Column("description", sa.Text, nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    sa.Table(
        "model_aliases",
        md,
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("alias", sa.String(255), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.ForeignKeyConstraint(["name", "version"], ["model_versions.name", "model_versions.version"]),
    )
    md.create_all(conn)
    conn.execute(revision.insert().values(id=1, revision=0))


def _m0002_prompts(conn: Connection) -> None:
    """Prompt registry: prompts, their immutable numbered versions, and aliases."""
    md = sa.MetaData()
    sa.Table(
        "registered_prompts",
        md,
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("description", sa.Text, nullable=True),
        sa.Column("tags", sa.Text, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    )
    sa.Table(
        "prompt_versions",
        md,
        sa.Column("name", sa.String(255), sa.ForeignKey("registered_prompts.name"), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("template_type", sa.String(16), nullable=False),
        sa.Column("template", sa.Text, nullable=False),
        sa.Column("variables", sa.Text, nullable=False),
        sa.Column("commit_message", sa.Text, nullable=True),
        sa.Column("tags", sa.Text, nullable=False),
        sa.Column("response_format", sa.Text, nullable=True),
        sa.Column("model_config", sa.Text, nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    sa.Table(
        "prompt_aliases",
        md,
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("alias", sa.String(255), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.ForeignKeyConstraint(["name", "version"], ["prompt_versions.name", "prompt_versions.version"]),
    )
    md.create_all(conn)


def _m0003_trace_summaries(conn: Connection) -> None:
    """One summary row per LLM call, written in batches by the trace sink."""
    md = sa.MetaData()
    sa.Table(
        "trace_summaries",
        md,
        sa.Column("trace_id", sa.String(32), primary_key=True),
        sa.Column("span_id", sa.String(16), primary_key=True),
        sa.Column("started_at", sa.BigInteger, nullable=False),
        sa.Column("duration_ms", sa.Float, nullable=False),
        sa.Column("time_to_first_chunk_ms", sa.Float, nullable=True),
        sa.Column("operation", sa.String(64), nullable=False),
        sa.Column("route", sa.String(255), nullable=True),
        sa.Column("target", sa.Text, nullable=True),
        sa.Column("provider", sa.String(64), nullable=True),
        sa.Column("request_model", sa.String(255), nullable=True),
        sa.Column("response_model", sa.String(255), nullable=True),
        sa.Column("status_code", sa.Integer, nullable=True),
        sa.Column("error_type", sa.String(255), nullable=True),
        sa.Column("stream", sa.Boolean, nullable=False),
        sa.Column("input_tokens", sa.Integer, nullable=True),
        sa.Column("output_tokens", sa.Integer, nullable=True),
        sa.Column("key_id", sa.String(64), nullable=True),
        sa.Column("prompt_name", sa.String(255), nullable=True),
        sa.Column("prompt_version", sa.Integer, nullable=True),
        sa.Column("input_content", sa.Text, nullable=True),
        sa.Column("output_content", sa.Text, nullable=True),
        sa.Column("attributes", sa.Text, nullable=False),
        sa.Index("ix_trace_summaries_started_at", "started_at"),
        sa.Index("ix_trace_summaries_route_started_at", "route", "started_at"),
        sa.Index("ix_trace_summaries_prompt", "prompt_name", "prompt_version"),
    )
    md.create_all(conn)


def _m0004_assessments(conn: Connection) -> None:
    """Judges' and people's assessments, and offline evaluation runs with their items (issue 11)."""
    md = sa.MetaData()
    sa.Table(
        "assessments",
        md,
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("trace_id", sa.String(32), nullable=True),
        sa.Column("span_id", sa.String(16), nullable=True),
        sa.Column("evaluation_id", sa.String(36), nullable=True),
        sa.Column("item_index", sa.Integer, nullable=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("source_type", sa.String(16), nullable=False),
        sa.Column("source_id", sa.String(255), nullable=True),
        sa.Column("value", sa.Text, nullable=True),
        sa.Column("score", sa.Float, nullable=True),
        sa.Column("label", sa.String(255), nullable=True),
        sa.Column("rationale", sa.Text, nullable=True),
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.Column("error_message", sa.Text, nullable=True),
        sa.Column("judge_prompt_name", sa.String(255), nullable=True),
        sa.Column("judge_prompt_version", sa.Integer, nullable=True),
        sa.Column("judge_model", sa.String(255), nullable=True),
        sa.Column("judge_trace_id", sa.String(32), nullable=True),
        sa.Column("input_tokens", sa.Integer, nullable=True),
        sa.Column("output_tokens", sa.Integer, nullable=True),
        sa.Column("cost_usd", sa.Float, nullable=True),
        sa.Column("latency_ms", sa.Float, nullable=True),
        sa.Column("attempts", sa.Integer, nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("metadata", sa.Text, nullable=False, server_default="{}"),
        sa.Index("ix_assessments_trace_id", "trace_id"),
        sa.Index("ix_assessments_evaluation_item", "evaluation_id", "item_index"),
        sa.Index("ix_assessments_name_score", "name", "score"),
    )
    sa.Table(
        "evaluations",
        md,
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("request", sa.Text, nullable=False),
        sa.Column("item_count", sa.Integer, nullable=False),
        sa.Column("judge_count", sa.Integer, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("started_at", sa.BigInteger, nullable=True),
        sa.Column("finished_at", sa.BigInteger, nullable=True),
        sa.Column("error_message", sa.Text, nullable=True),
        sa.Index("ix_evaluations_created_at", "created_at"),
    )
    sa.Table(
        "evaluation_items",
        md,
        sa.Column("evaluation_id", sa.String(36), sa.ForeignKey("evaluations.id"), primary_key=True),
        sa.Column("item_index", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("inputs", sa.Text, nullable=False),
        sa.Column("outputs", sa.Text, nullable=True),
        sa.Column("expectations", sa.Text, nullable=True),
        sa.Column("trace_id", sa.String(32), nullable=True),
        sa.Column("span_id", sa.String(16), nullable=True),
        sa.Column("prompt_name", sa.String(255), nullable=True),
        sa.Column("prompt_version", sa.Integer, nullable=True),
        sa.Column("model", sa.String(255), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error_message", sa.Text, nullable=True),
    )
    md.create_all(conn)


def _m0005_keys(conn: Connection) -> None:
    """Gateway keys (issue 13): the keys table (a digest and a display prefix, never the key), and each LLM call's
    cost as a column of its trace summary, so spend and usage are sums (copied from the attributes JSON of the
    summaries written before), with an index for a key's calls over time."""
    md = sa.MetaData()
    sa.Table(
        "gateway_keys",
        md,
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False, unique=True),
        sa.Column("digest", sa.String(64), nullable=False, unique=True),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("scopes", sa.Text, nullable=False),
        sa.Column("models", sa.Text, nullable=True),
        sa.Column("routes", sa.Text, nullable=True),
        sa.Column("rpm", sa.Integer, nullable=True),
        sa.Column("tpm", sa.Integer, nullable=True),
        sa.Column("budget_usd", sa.Float, nullable=True),
        sa.Column("budget_period", sa.String(8), nullable=True),
        sa.Column("expires_at", sa.BigInteger, nullable=True),
        sa.Column("revoked_at", sa.BigInteger, nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.Column("rotated_at", sa.BigInteger, nullable=True),
    )
    md.create_all(conn)
    conn.execute(sa.text("ALTER TABLE trace_summaries ADD COLUMN cost_usd FLOAT"))
    conn.execute(sa.text("CREATE INDEX ix_trace_summaries_key_started_at ON trace_summaries (key_id, started_at)"))
    if conn.dialect.name == "postgresql":
        cost = "CAST(CAST(attributes AS json) ->> 'gateway.usage.cost_usd' AS DOUBLE PRECISION)"
    else:
        cost = "CAST(json_extract(attributes, '$.\"gateway.usage.cost_usd\"') AS REAL)"
    conn.execute(
        sa.text(f"UPDATE trace_summaries SET cost_usd = {cost} WHERE attributes LIKE '%gateway.usage.cost_usd%'")
    )


def _m0006_judge_queue(conn: Connection) -> None:
    """The embedded judge job queue (issue 12, judges/queue/local.py): one row per job not yet acked (ready,
    delayed, claimed, or dead: a dead letter), and the judges whose jobs are paused."""
    md = sa.MetaData()
    sa.Table(
        "judge_jobs",
        md,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("judge", sa.String(255), nullable=False),
        sa.Column("job_id", sa.Text, nullable=False),
        sa.Column("fields", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("consumer", sa.String(255), nullable=True),
        sa.Column("lease", sa.String(32), nullable=True),
        sa.Column("claimed_at", sa.BigInteger, nullable=True),
        sa.Column("visible_at", sa.BigInteger, nullable=True),
        sa.Column("deliveries", sa.Integer, nullable=False, server_default="0"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("enqueued_at", sa.BigInteger, nullable=False),
        sa.Column("dead_reason", sa.Text, nullable=True),
        sa.Column("dead_at", sa.BigInteger, nullable=True),
        sa.Index("ix_judge_jobs_state_id", "state", "id"),
        sa.Index("ix_judge_jobs_state_claimed_at", "state", "claimed_at"),
        sa.Index("ix_judge_jobs_state_visible_at", "state", "visible_at"),
    )
    sa.Table(
        "judge_queue_pauses",
        md,
        sa.Column("judge", sa.String(255), primary_key=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("paused_at", sa.BigInteger, nullable=False),
    )
    md.create_all(conn)


def _m0007_evaluation_leases(conn: Connection) -> None:
    """Evaluation runs get an owner lease (judges/evaluations.py): the owning process's id and its last heartbeat
    (epoch ms), renewed while it feeds and settles the run; a run whose heartbeat is older than the lease
    timeout, or never set (the runs stored before this migration), is taken over by another process."""
    conn.execute(sa.text("ALTER TABLE evaluations ADD COLUMN owner VARCHAR(255)"))
    conn.execute(sa.text("ALTER TABLE evaluations ADD COLUMN heartbeat_at BIGINT"))
    # Every gateway worker looks for the unfinished runs every few seconds: found by status, not by a scan.
    conn.execute(sa.text("CREATE INDEX ix_evaluations_status ON evaluations (status)"))


MIGRATIONS: tuple[Migration, ...] = (
    _m0001_registry,
    _m0002_prompts,
    _m0003_trace_summaries,
    _m0004_assessments,
    _m0005_keys,
    _m0006_judge_queue,
    _m0007_evaluation_leases,
)
SCHEMA_VERSION = len(MIGRATIONS)

_schema_version = sa.table("schema_version", sa.column("id", sa.Integer), sa.column("version", sa.Integer))


def migrate(engine: Engine, migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """Bring the database up to ``len(migrations)`` and return the schema version it is at.

    Runs in one transaction (DDL is transactional on both backends, so a failed migration leaves
    the previous version intact) under a lock, so several processes starting at once apply each
    migration exactly once. A database newer than ``migrations`` raises :class:`DependencyError`.
    """
    with _migration_transaction(engine) as conn:
        current = current_version(conn)
        if current > len(migrations):
            where = engine.url.render_as_string(hide_password=True)
            raise DependencyError(
                f"The store at {where} has schema version {current}, but this gateway only knows "
                f"versions up to {len(migrations)}: upgrade the gateway (a store is never downgraded)."
            )
        for number in range(current + 1, len(migrations) + 1):
            migrations[number - 1](conn)
            _record_version(conn, number)
        return len(migrations)


def open_migrated_engine(uri: str) -> Engine:
    """The engine for ``uri`` with its schema brought up to date (disposed again if migrating fails)."""
    engine = open_engine(uri)
    try:
        migrate(engine)
    except BaseException:
        engine.dispose()
        raise
    return engine


def current_version(conn: Connection) -> int:
    """The schema version of the database behind ``conn`` (0 when no migration ever ran)."""
    if not sa.inspect(conn).has_table("schema_version"):
        return 0
    version = conn.execute(sa.select(_schema_version.c.version).where(_schema_version.c.id == 1)).scalar()
    return int(version or 0)


@contextlib.contextmanager
def _migration_transaction(engine: Engine) -> Iterator[Connection]:
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            # Transaction-scoped: released at commit or rollback, even if the process dies.
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_ADVISORY_LOCK_KEY)))
            yield conn
    else:
        # SQLite: BEGIN IMMEDIATE holds the database write lock until commit.
        with begin_write(engine) as conn:
            yield conn


def _record_version(conn: Connection, number: int) -> None:
    updated = conn.execute(_schema_version.update().where(_schema_version.c.id == 1).values(version=number)).rowcount
    if not updated:
        conn.execute(_schema_version.insert().values(id=1, version=number))
