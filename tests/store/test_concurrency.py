"""Concurrent writers, each with its own RegistryStore (as separate replicas would be), on both backends.

Every writer first opens the store on a fresh database, so these also race the migrations.
"""

from __future__ import annotations

import multiprocessing
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from gateway.errors import AlreadyExists
from gateway.store.registry import RegistryStore

THREADS = 20
PROCESSES = 8
VERSIONS_PER_PROCESS = 3
WAIT_S = 120  # only a guard against a hang: a broken run fails instead of blocking the suite


def _register_after(url: str, start: Any, count: int, create_model: bool = True) -> list[int]:
    store = RegistryStore.open(url)
    try:
        start.wait(WAIT_S)
        return [
            store.create_version("iris", source=f"/m/{i}", flavor="onnx", create_model=create_model).version
            for i in range(count)
        ]
    finally:
        store.close()


@pytest.mark.parametrize("create_model", [True, False], ids=["create-model", "model-exists"])
def test_threads_get_consecutive_versions(store_url: str, create_model: bool) -> None:
    if not create_model:
        # Then each transaction starts with a read: the case a deferred SQLite BEGIN gets wrong.
        setup = RegistryStore.open(store_url)
        setup.create_model("iris")
        setup.close()
    start = threading.Barrier(THREADS)
    with ThreadPoolExecutor(THREADS) as pool:
        futures = [pool.submit(_register_after, store_url, start, 1, create_model) for _ in range(THREADS)]
        versions = sorted(v for future in futures for v in future.result(timeout=WAIT_S))
    assert versions == list(range(1, THREADS + 1))
    store = RegistryStore.open(store_url)
    try:
        assert [v.version for v in store.list_versions("iris")] == versions
        assert store.get_version_by_alias("iris", "latest").version == THREADS
    finally:
        store.close()


def _create_model_after(url: str, start: threading.Barrier) -> str:
    store = RegistryStore.open(url)
    try:
        start.wait(WAIT_S)
        store.create_model("iris")
        return "created"
    except AlreadyExists:
        return "exists"
    finally:
        store.close()


def test_create_model_race_has_one_winner(store_url: str) -> None:
    start = threading.Barrier(10)
    with ThreadPoolExecutor(10) as pool:
        outcomes = sorted(pool.map(lambda _: _create_model_after(store_url, start), range(10)))
    assert outcomes == ["created"] + ["exists"] * 9


def _process_main(url: str, start: Any, results: Any) -> None:
    try:
        results.put(_register_after(url, start, VERSIONS_PER_PROCESS))
    except BaseException as exc:
        results.put(repr(exc))
        raise


def test_processes_get_consecutive_versions(store_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(PROCESSES)
    results = ctx.Queue()
    args = (store_url, start, results)
    processes = [ctx.Process(target=_process_main, args=args) for _ in range(PROCESSES)]
    for process in processes:
        process.start()
    try:
        outcomes = [results.get(timeout=WAIT_S) for _ in processes]
    finally:
        for process in processes:
            process.join(WAIT_S)
    errors = [outcome for outcome in outcomes if isinstance(outcome, str)]
    assert errors == []
    versions = sorted(v for outcome in outcomes for v in outcome)
    assert versions == list(range(1, PROCESSES * VERSIONS_PER_PROCESS + 1))
    assert [process.exitcode for process in processes] == [0] * PROCESSES
