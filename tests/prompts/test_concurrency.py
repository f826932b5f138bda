"""20 concurrent clients, each with its own PromptStore (as separate replicas), creating versions of
one prompt: 20 distinct, consecutive version numbers, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from prompts.store import PromptStore

CLIENTS = 20
WAIT_S = 120  # a guard against a hang only


def _create_after(url: str, start: threading.Barrier, i: int) -> int:
    store = PromptStore.open(url)
    try:
        start.wait(WAIT_S)
        return store.create_version("qa", f"version from client {i}: {{{{ q }}}}", commit_message=str(i)).version
    finally:
        store.close()


@pytest.mark.parametrize("prompt_exists", [False, True], ids=["racing-to-create", "existing"])
def test_concurrent_creators_get_consecutive_versions(store_url: str, prompt_exists: bool) -> None:
    if prompt_exists:
        setup = PromptStore.open(store_url)
        setup.create_prompt("qa")
        setup.close()
    start = threading.Barrier(CLIENTS)
    with ThreadPoolExecutor(CLIENTS) as pool:
        futures = [pool.submit(_create_after, store_url, start, i) for i in range(CLIENTS)]
        versions = sorted(future.result(timeout=WAIT_S) for future in futures)
    assert versions == list(range(1, CLIENTS + 1))
    store = PromptStore.open(store_url)
    try:
        catalog = store.load_catalog()
        stored = catalog.versions_of["qa"]
        assert [v.version.version for v in stored] == versions
        # Each client's own template landed under the number it was told.
        assert sorted(v.version.commit_message for v in stored) == sorted(str(i) for i in range(CLIENTS))  # type: ignore[type-var]
        assert catalog.by_alias("qa", "latest").version.version == CLIENTS
    finally:
        store.close()
