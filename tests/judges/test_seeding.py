"""Seeding the built-in judges is idempotent: several workers (each with its own engine, as uvicorn workers
and replicas have) seeding one store at the same moment create each built-in once, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import sqlalchemy as sa

from gateway.store.schema import prompt_versions
from judges.builtin import BUILTINS
from judges.catalog import PRODUCTION, seed_builtins
from prompts.catalog import Catalog
from prompts.store import PromptStore

WORKERS = 8


def test_workers_starting_at_once_seed_each_builtin_once(store_url: str) -> None:
    PromptStore.open(store_url).close()  # the schema first, as `gateway serve` migrates before its workers start
    stores = [PromptStore.open(store_url) for _ in range(WORKERS)]
    barrier = threading.Barrier(WORKERS)

    def start(store: PromptStore) -> list[str]:
        catalog = store.load_catalog()  # every worker read the store before any seeded: all see no judges
        barrier.wait()
        return seed_builtins(store, catalog)

    try:
        with ThreadPoolExecutor(WORKERS) as pool:
            seeded = list(pool.map(start, stores))
        assert sorted(name for names in seeded for name in names) == sorted(BUILTINS)  # each once, by someone
        catalog = stores[0].load_catalog()
        with stores[0].engine.connect() as conn:
            rows = conn.execute(sa.select(prompt_versions.c.name, sa.func.count()).group_by(prompt_versions.c.name))
            assert dict(rows.all()) == {f"judges.{name}": 1 for name in BUILTINS}
        for name in BUILTINS:
            assert catalog.aliases[(f"judges.{name}", PRODUCTION)] == 1

        revision = stores[0].revision()
        assert seed_builtins(stores[1], Catalog.empty()) == []  # the store already has them: nothing written
        assert seed_builtins(stores[1], stores[1].load_catalog()) == []
        assert stores[0].revision() == revision
    finally:
        for store in stores:
            store.close()


def test_a_worker_whose_seeds_another_worker_made_first_still_knows_every_judge(sqlite_url: str) -> None:
    """Worker A read the store before worker B seeded everything: A seeds nothing itself, yet once started
    its catalog has every built-in (it once waited for its refresher: a request in between found no judge)."""
    import asyncio

    from gateway.judge_settings import JudgesSettings
    from gateway.store.assessments import AssessmentStore
    from gateway.telemetry.events import EvaluationEvents
    from judges.api import start_judges
    from prompts.api import PromptsState
    from prompts.cache import PromptCache

    PromptStore.open(sqlite_url).close()
    store_a, store_b = PromptStore.open(sqlite_url), PromptStore.open(sqlite_url)
    try:
        cache_a = PromptCache(store_a)
        cache_a.refresh_sync()  # A's cache: no judges yet
        assert sorted(seed_builtins(store_b, store_b.load_catalog())) == sorted(BUILTINS)  # B seeds them all

        async def start_a() -> list[str]:
            state = await start_judges(
                JudgesSettings(), PromptsState(store_a, cache_a), None,  # type: ignore[arg-type]  # no LLM call here
                AssessmentStore(store_a.engine), EvaluationEvents(), routes=(),
            )  # fmt: skip
            return sorted(state.catalog.judges())

        assert asyncio.run(start_a()) == sorted(BUILTINS)
    finally:
        store_a.close()
        store_b.close()
