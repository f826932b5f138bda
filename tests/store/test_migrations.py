"""Schema migrations: ordered, idempotent, data-preserving, and refusing a database newer than the code."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from gateway.errors import DependencyError
from gateway.store import schema
from gateway.store.engine import open_engine
from gateway.store.migrations import MIGRATIONS, SCHEMA_VERSION, current_version, migrate
from gateway.store.registry import RegistryStore


def _add_owner_column(conn: Connection) -> None:
    """A stand-in for a future migration: adds a nullable column and a table, drops nothing."""
    conn.execute(sa.text("ALTER TABLE registered_models ADD COLUMN owner VARCHAR(255)"))
    conn.execute(sa.text("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL)"))


def _broken(conn: Connection) -> None:
    conn.execute(sa.text("CREATE TABLE half_done (id INTEGER PRIMARY KEY)"))
    raise RuntimeError("migration failed halfway")


def _tables(engine: sa.Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names())


def test_fresh_database_gets_every_table_of_the_schema(store_url: str) -> None:
    engine = open_engine(store_url)
    try:
        assert migrate(engine) == SCHEMA_VERSION == len(MIGRATIONS)
        inspector = sa.inspect(engine)
        # The migrations and schema.py must describe the same tables, columns and keys.
        assert set(inspector.get_table_names()) == set(schema.metadata.tables)
        for table in schema.metadata.sorted_tables:
            columns = {c["name"]: c["nullable"] for c in inspector.get_columns(table.name)}
            assert columns == {c.name: c.nullable for c in table.columns}, table.name
            primary_key = inspector.get_pk_constraint(table.name)["constrained_columns"]
            assert primary_key == [c.name for c in table.primary_key], table.name
            foreign_keys = {tuple(fk["constrained_columns"]) for fk in inspector.get_foreign_keys(table.name)}
            assert foreign_keys == {tuple(fk.column_keys) for fk in table.foreign_key_constraints}, table.name
            indexes = {ix["name"]: ix["column_names"] for ix in inspector.get_indexes(table.name)
                       if not ix.get("duplicates_constraint")}  # fmt: skip
            assert indexes == {ix.name: [c.name for c in ix.columns] for ix in table.indexes}, table.name
    finally:
        engine.dispose()


def test_migrate_twice_is_a_no_op(store_url: str) -> None:
    store = RegistryStore.open(store_url)
    try:
        store.create_version("iris", source="/m", flavor="onnx", create_model=True)
        before = store.snapshot()
        assert migrate(store.engine) == SCHEMA_VERSION
        assert store.snapshot() == before
    finally:
        store.close()


def test_older_database_is_migrated_and_keeps_its_data(store_url: str) -> None:
    engine = open_engine(store_url)
    try:
        assert migrate(engine, ()) == 0  # no migration applied: nothing created
        assert _tables(engine) == set()
        assert migrate(engine, MIGRATIONS[:1]) == 1
        store = RegistryStore(engine)
        store.create_model("iris", description="kept", tags={"team": "ml"})
        store.create_version("iris", source="/m/1", flavor="onnx", signature={"inputs": "[]"})
        store.set_alias("iris", "champion", 1)
        before = store.snapshot()

        assert migrate(engine, (*MIGRATIONS, _add_owner_column)) == len(MIGRATIONS) + 1
        with engine.connect() as conn:
            assert current_version(conn) == len(MIGRATIONS) + 1
            owner = conn.execute(sa.text("SELECT owner FROM registered_models WHERE name = 'iris'")).scalar()
        assert owner is None
        assert "notes" in _tables(engine)
        assert store.snapshot() == before
        assert store.get_model("iris").description == "kept"
        store.create_version("iris", source="/m/2", flavor="onnx")  # still writable after the upgrade
        assert store.get_version_by_alias("iris", "latest").version == 2
    finally:
        engine.dispose()


def test_version_3_database_with_data_moves_to_4_and_keeps_it(store_url: str) -> None:
    """Migration 4 (assessments, evaluation runs) over a store that already holds models, prompts and traces."""
    from gateway.store.assessments import LLM_JUDGE, Assessment, AssessmentStore
    from gateway.store.evaluations import EvaluationStore
    from gateway.store.traces import TraceFilters, TraceStore
    from prompts.store import PromptStore
    from tests.telemetry.test_trace_store import row

    engine = open_engine(store_url)
    try:
        assert migrate(engine, MIGRATIONS[:3]) == 3
        assert not {"assessments", "evaluations", "evaluation_items"} & _tables(engine)
        registry = RegistryStore(engine)
        registry.create_version("iris", source="/m/1", flavor="onnx", create_model=True)
        registry.set_alias("iris", "champion", 1)
        prompts = PromptStore(engine)
        prompts.create_version("qa", "Answer {{ question }}")
        traces = TraceStore(engine)
        traces.insert_many([{k: v for k, v in r.items() if k != "cost_usd"} for r in (row(1), row(2, route="kept"))])
        before = (registry.snapshot(), prompts.load_catalog().revision, _trace_rows(engine))

        assert migrate(engine, MIGRATIONS[:4]) == 4
        assert {"assessments", "evaluations", "evaluation_items"} <= _tables(engine)
        assert (registry.snapshot(), prompts.load_catalog().revision, _trace_rows(engine)) == before
        assert migrate(engine) == SCHEMA_VERSION  # and on: the current TraceStore reads them
        assert [t["route"] for t in traces.search(TraceFilters()).summaries] == ["kept", "gpt-4o-mini"]
        assert prompts.load_catalog().version("qa", 1).version.template == "Answer {{ question }}"
        # The new tables take rows; the old ones still take writes.
        judged = Assessment(id="a" * 36, trace_id=f"{1:032x}", name="safety", source_type=LLM_JUDGE, value=True)
        assert AssessmentStore(engine).insert_if_absent([judged]) == 1
        EvaluationStore(engine).create("run-1", {"judges": ["safety"]}, [{"inputs": "q"}], judge_count=1)
        registry.create_version("iris", source="/m/2", flavor="onnx")
        assert registry.get_version_by_alias("iris", "latest").version == 2
    finally:
        engine.dispose()


def _trace_rows(engine: sa.Engine) -> list[tuple[object, ...]]:
    """The trace summaries as stored, read without TraceStore (whose columns are the newest schema's)."""
    with engine.connect() as conn:
        query = "SELECT trace_id, span_id, route, input_tokens, attributes FROM trace_summaries ORDER BY trace_id"
        return [tuple(r) for r in conn.execute(sa.text(query))]


def test_version_4_database_moves_to_5_with_costs_as_a_column(store_url: str) -> None:
    """Migration 5 (gateway keys): a summary written with its cost only in the attributes JSON gets it as a column."""
    from gateway.store.keys import KeyStore
    from gateway.store.traces import TraceFilters, TraceStore
    from tests.telemetry.test_trace_store import row

    engine = open_engine(store_url)
    try:
        assert migrate(engine, MIGRATIONS[:4]) == 4
        with engine.begin() as conn:  # as the sink of version 4 wrote them: no cost_usd column
            for values in (
                row(1, attributes='{"gateway.usage.cost_usd": 0.00125, "gateway.llm.attempts": 1}'),
                row(2, attributes="{}"),
            ):
                del values["cost_usd"]
                columns = ", ".join(values)
                conn.execute(sa.text(f"INSERT INTO trace_summaries ({columns}) VALUES (:{', :'.join(values)})"), values)
        assert migrate(engine) == SCHEMA_VERSION
        summaries = {t["trace_id"]: t for t in TraceStore(engine).search(TraceFilters()).summaries}
        assert summaries[f"{1:032x}"]["cost_usd"] == pytest.approx(0.00125)
        assert summaries[f"{1:032x}"]["attributes"]["gateway.usage.cost_usd"] == pytest.approx(0.00125)
        assert summaries[f"{2:032x}"]["cost_usd"] is None
        keys = KeyStore(engine)
        keys.create("0123456789ab", "app-a", "f" * 64, "gw_abcdefg", ["llm"], rpm=5)
        assert [(k.name, k.rpm, k.scopes) for k in keys.load()] == [("app-a", 5, ("llm",))]
    finally:
        engine.dispose()


def test_newer_database_refuses_to_start(store_url: str) -> None:
    engine = open_engine(store_url)
    try:
        migrate(engine, (*MIGRATIONS, _add_owner_column))
    finally:
        engine.dispose()
    newer = len(MIGRATIONS) + 1
    with pytest.raises(DependencyError, match=f"has schema version {newer}.*upgrade the gateway"):
        RegistryStore.open(store_url)


def test_failed_migration_leaves_the_previous_version(store_url: str) -> None:
    engine = open_engine(store_url)
    try:
        migrate(engine)
        with pytest.raises(RuntimeError, match="halfway"):
            migrate(engine, (*MIGRATIONS, _broken))
        # DDL is transactional on both backends: the half-created table is gone too.
        assert "half_done" not in _tables(engine)
        with engine.connect() as conn:
            assert current_version(conn) == len(MIGRATIONS)
    finally:
        engine.dispose()


def test_version_5_database_moves_to_6_with_the_judge_queue(store_url: str) -> None:
    """Migration 6 (the embedded judge queue's tables) over a store that already holds keys and traces."""
    import asyncio
    import time

    from gateway.store.keys import KeyStore
    from gateway.store.traces import TraceFilters, TraceStore
    from judges.queue.jobs import JudgeJob
    from judges.queue.local import LocalJobQueue
    from tests.telemetry.test_trace_store import row

    engine = open_engine(store_url)
    try:
        assert migrate(engine, MIGRATIONS[:5]) == 5
        assert not {"judge_jobs", "judge_queue_pauses"} & _tables(engine)
        KeyStore(engine).create("0123456789ab", "app-a", "f" * 64, "gw_abcdefg", ["llm"], rpm=5)
        TraceStore(engine).insert_many([row(1)])

        assert migrate(engine) == SCHEMA_VERSION
        assert {"judge_jobs", "judge_queue_pauses"} <= _tables(engine)
        assert [k.name for k in KeyStore(engine).load()] == ["app-a"]
        assert len(TraceStore(engine).search(TraceFilters()).summaries) == 1

        async def round_trip() -> list[str]:
            queue = LocalJobQueue(engine)  # the store's own engine: closing the queue leaves it open
            job = JudgeJob(kind="online", judge="safety", enqueued_at=time.time(), trace_id=f"{1:032x}")
            await queue.enqueue([job, job])  # the same job twice: two rows (the assessment id dedupes)
            claimed = await queue.claim("worker-a", 5, 0)
            await queue.pause("safety", "401 from route judge")
            await queue.close()
            return [d.job.id for d in claimed]

        assert asyncio.run(round_trip()) == [f"online:{1:032x}:-:safety"] * 2
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM judge_jobs WHERE state = 'claimed'")).scalar() == 2
            assert conn.execute(sa.text("SELECT reason FROM judge_queue_pauses")).scalar() == "401 from route judge"
    finally:
        engine.dispose()


def test_version_6_database_moves_to_7_with_evaluation_leases(store_url: str) -> None:
    """Migration 7 (the evaluation runs' owner lease): a run stored before it has no owner nor heartbeat, so any
    process takes it at once; a run created after it is held by its creator."""
    from gateway.store.evaluation_runs import Lease, claim_run, claimable_runs
    from gateway.store.evaluations import EvaluationStore

    engine = open_engine(store_url)
    try:
        assert migrate(engine, MIGRATIONS[:6]) == 6
        with engine.begin() as conn:  # as version 6 stored a run left running by a process that stopped
            conn.execute(
                sa.text(
                    "INSERT INTO evaluations (id, status, request, item_count, judge_count, created_at, started_at)"
                    " VALUES ('old-run', 'running', '{\"judges\": []}', 0, 1, 1000, 2000)"
                )
            )
        assert migrate(engine) == SCHEMA_VERSION
        store = EvaluationStore(engine)
        old = store.get("old-run")
        assert old is not None and (old["status"], old["owner"], old["heartbeat_at"]) == ("running", None, None)
        (found,) = claimable_runs(engine, 0)  # never owned: claimable whatever the lease timeout
        assert (found.id, found.started_at, found.lease) == ("old-run", 2000, Lease(None, None))
        assert claim_run(engine, "old-run", "running", 2000, owner="p1", lease=found.lease) is True
        store.create("new-run", {"judges": []}, [{"inputs": "q"}], judge_count=1, owner="p2")
        assert claimable_runs(engine, 0) == []
        new = store.get("new-run")
        assert new is not None and (new["owner"], new["heartbeat_at"]) == ("p2", new["created_at"])
    finally:
        engine.dispose()
