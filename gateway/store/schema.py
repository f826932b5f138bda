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

# --- prompt registry (migration 2) ----------------------------------------------------------------

registered_prompts = sa.Table(
    "registered_prompts",
    metadata,
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("description", sa.Text, nullable=True),
    sa.Column("tags", sa.Text, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)

prompt_versions = sa.Table(
    "prompt_versions",
    metadata,
    sa.Column("name", sa.String(255), sa.ForeignKey("registered_prompts.name"), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    # "text" (template is a JSON string) or "chat" (a JSON list of {role, content} messages).
    sa.Column("template_type", sa.String(16), nullable=False),
    sa.Column("template", sa.Text, nullable=False),
    sa.Column("variables", sa.Text, nullable=False),  # JSON list of names, in first-use order
    sa.Column("commit_message", sa.Text, nullable=True),
    sa.Column("tags", sa.Text, nullable=False),
    sa.Column("response_format", sa.Text, nullable=True),  # JSON
    sa.Column("model_config", sa.Text, nullable=True),  # JSON
    sa.Column("created_at", sa.BigInteger, nullable=False),
)

prompt_aliases = sa.Table(
    "prompt_aliases",
    metadata,
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("alias", sa.String(255), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.ForeignKeyConstraint(["name", "version"], ["prompt_versions.name", "prompt_versions.version"]),
)

# --- trace summaries (migration 3): one row per LLM call, written by the trace sink ---------------

trace_summaries = sa.Table(
    "trace_summaries",
    metadata,
    sa.Column("trace_id", sa.String(32), primary_key=True),  # hex, as in traceparent
    sa.Column("span_id", sa.String(16), primary_key=True),  # the request's SERVER span
    sa.Column("started_at", sa.BigInteger, nullable=False),  # epoch ms
    sa.Column("duration_ms", sa.Float, nullable=False),
    sa.Column("time_to_first_chunk_ms", sa.Float, nullable=True),
    sa.Column("operation", sa.String(64), nullable=False),  # gen_ai.operation.name
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
    sa.Column("input_content", sa.Text, nullable=True),  # only when content capture is on
    sa.Column("output_content", sa.Text, nullable=True),
    sa.Column("attributes", sa.Text, nullable=False),  # JSON: the rest of the span's attributes
    # gateway.usage.cost_usd (also in attributes): a column since migration 5, so spend and usage are sums
    sa.Column("cost_usd", sa.Float, nullable=True),
    sa.Index("ix_trace_summaries_started_at", "started_at"),
    sa.Index("ix_trace_summaries_route_started_at", "route", "started_at"),
    sa.Index("ix_trace_summaries_prompt", "prompt_name", "prompt_version"),
    sa.Index("ix_trace_summaries_key_started_at", "key_id", "started_at"),
)

# --- assessments and evaluation runs (migration 4) -------------------------------------------------

assessments = sa.Table(
    "assessments",
    metadata,
    # uuid5 of (target, judge name, judge version, evaluation id or "online"): a retried job writes the
    # same id, so insert-if-absent never stores one verdict twice (gateway/store/assessments.py).
    sa.Column("id", sa.String(36), primary_key=True),
    # The target: a span of a stored trace, or an item of an evaluation run (or both, for a trace-sourced item).
    sa.Column("trace_id", sa.String(32), nullable=True),
    sa.Column("span_id", sa.String(16), nullable=True),
    sa.Column("evaluation_id", sa.String(36), nullable=True),
    sa.Column("item_index", sa.Integer, nullable=True),
    sa.Column("name", sa.String(255), nullable=False),  # the judge's name (or the human label's)
    sa.Column("source_type", sa.String(16), nullable=False),  # LLM_JUDGE | HUMAN | CODE
    sa.Column("source_id", sa.String(255), nullable=True),
    sa.Column("value", sa.Text, nullable=True),  # JSON; null for an error assessment
    sa.Column("score", sa.Float, nullable=True),  # from value: bool -> 1.0/0.0, number -> itself
    sa.Column("label", sa.String(255), nullable=True),  # from value: bool -> yes/no, string -> itself
    sa.Column("rationale", sa.Text, nullable=True),
    sa.Column("error_code", sa.String(64), nullable=True),
    sa.Column("error_message", sa.Text, nullable=True),
    sa.Column("judge_prompt_name", sa.String(255), nullable=True),
    sa.Column("judge_prompt_version", sa.Integer, nullable=True),
    sa.Column("judge_model", sa.String(255), nullable=True),  # the model that answered
    sa.Column("judge_trace_id", sa.String(32), nullable=True),  # the judge call's own trace
    sa.Column("input_tokens", sa.Integer, nullable=True),
    sa.Column("output_tokens", sa.Integer, nullable=True),
    sa.Column("cost_usd", sa.Float, nullable=True),  # from the route's prices, when configured
    sa.Column("latency_ms", sa.Float, nullable=True),
    sa.Column("attempts", sa.Integer, nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),  # epoch ms
    sa.Column("metadata", sa.Text, nullable=False, server_default="{}"),  # JSON object
    sa.Index("ix_assessments_trace_id", "trace_id"),
    sa.Index("ix_assessments_evaluation_item", "evaluation_id", "item_index"),
    sa.Index("ix_assessments_name_score", "name", "score"),
)

evaluations = sa.Table(
    "evaluations",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),  # uuid4
    sa.Column("status", sa.String(16), nullable=False),  # queued | running | completed | cancelled | failed
    sa.Column("request", sa.Text, nullable=False),  # JSON: the normalized request
    sa.Column("item_count", sa.Integer, nullable=False),
    sa.Column("judge_count", sa.Integer, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("started_at", sa.BigInteger, nullable=True),
    sa.Column("finished_at", sa.BigInteger, nullable=True),
    sa.Column("error_message", sa.Text, nullable=True),
    # The owner lease (migration 7, judges/evaluations.py): the owning process's id and its last heartbeat (epoch
    # ms); null on a run never owned (or released by an owner that stopped cleanly): any process may take it.
    sa.Column("owner", sa.String(255), nullable=True),
    sa.Column("heartbeat_at", sa.BigInteger, nullable=True),
    sa.Index("ix_evaluations_created_at", "created_at"),
    sa.Index("ix_evaluations_status", "status"),  # the unfinished runs every worker looks at every 2 s
)

evaluation_items = sa.Table(
    "evaluation_items",
    metadata,
    sa.Column("evaluation_id", sa.String(36), sa.ForeignKey("evaluations.id"), primary_key=True),
    sa.Column("item_index", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("inputs", sa.Text, nullable=False),  # JSON
    sa.Column("outputs", sa.Text, nullable=True),  # JSON; null until a target generated them
    sa.Column("expectations", sa.Text, nullable=True),  # JSON
    # The judged span: the stored trace's for a trace-sourced item, the generating call's for generated outputs.
    sa.Column("trace_id", sa.String(32), nullable=True),
    sa.Column("span_id", sa.String(16), nullable=True),
    sa.Column("prompt_name", sa.String(255), nullable=True),
    sa.Column("prompt_version", sa.Integer, nullable=True),
    sa.Column("model", sa.String(255), nullable=True),  # the model that produced the outputs
    sa.Column("status", sa.String(16), nullable=False),  # pending | done | error
    sa.Column("error_message", sa.Text, nullable=True),
)

# --- gateway keys (migration 5) ---------------------------------------------------------------------

gateway_keys = sa.Table(
    "gateway_keys",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),  # 12 hex characters: what spans and traces name (key_id)
    sa.Column("name", sa.String(255), nullable=False, unique=True),
    sa.Column("digest", sa.String(64), nullable=False, unique=True),  # sha256 hex of the key; never the key
    sa.Column("prefix", sa.String(16), nullable=False),  # the key's first characters, for display
    sa.Column("scopes", sa.Text, nullable=False),  # JSON list
    sa.Column("models", sa.Text, nullable=True),  # JSON list of LLM route names (the /v1 "model"); null: any
    sa.Column("routes", sa.Text, nullable=True),  # JSON list of route-table paths; null: any its scopes allow
    sa.Column("rpm", sa.Integer, nullable=True),
    sa.Column("tpm", sa.Integer, nullable=True),
    sa.Column("budget_usd", sa.Float, nullable=True),
    sa.Column("budget_period", sa.String(8), nullable=True),  # day | week | month (UTC)
    sa.Column("expires_at", sa.BigInteger, nullable=True),  # epoch ms
    sa.Column("revoked_at", sa.BigInteger, nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    sa.Column("rotated_at", sa.BigInteger, nullable=True),
)

# --- the embedded judge job queue (migration 6, judges/queue/local.py) ------------------------------

judge_jobs = sa.Table(
    "judge_jobs",
    metadata,
    # The queue's order (first in, first out) and a Delivery's handle; an integer rowid on SQLite.
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("judge", sa.String(255), nullable=False),
    sa.Column(
        "job_id", sa.Text, nullable=False
    ),  # JudgeJob.id (deterministic; not unique: a job may be enqueued twice)
    sa.Column("fields", sa.Text, nullable=False),  # JSON: JudgeJob.to_fields()
    sa.Column("state", sa.String(16), nullable=False),  # ready | delayed | claimed | dead (acked rows are deleted)
    sa.Column("consumer", sa.String(255), nullable=True),  # who holds it (claimed) or held it last (dead)
    sa.Column("lease", sa.String(32), nullable=True),  # the current hand-out, in the Delivery's ref
    sa.Column("claimed_at", sa.BigInteger, nullable=True),  # epoch ms of the current hand-out
    sa.Column("visible_at", sa.BigInteger, nullable=True),  # delayed: epoch ms when it is due again
    sa.Column("deliveries", sa.Integer, nullable=False, server_default="0"),  # hand-outs since (re)queued
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),  # failures that count
    sa.Column("enqueued_at", sa.BigInteger, nullable=False),  # epoch ms: JudgeJob.enqueued_at
    sa.Column("dead_reason", sa.Text, nullable=True),
    sa.Column("dead_at", sa.BigInteger, nullable=True),
    sa.Index("ix_judge_jobs_state_id", "state", "id"),
    sa.Index("ix_judge_jobs_state_claimed_at", "state", "claimed_at"),
    sa.Index("ix_judge_jobs_state_visible_at", "state", "visible_at"),
)

judge_queue_pauses = sa.Table(
    "judge_queue_pauses",
    metadata,
    # One row per paused judge (a configuration failure: a 401, an unknown route); deleted on resume.
    sa.Column("judge", sa.String(255), primary_key=True),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("paused_at", sa.BigInteger, nullable=False),  # epoch ms
)
