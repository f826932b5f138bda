"""Prompt fixtures: a migrated PromptStore, and a real gateway (uvicorn on loopback) on each backend."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import httpx
import pytest

from gateway.config import Settings, load_settings
from prompts.store import PromptStore
from tests.servers import run_gateway_in_thread


@pytest.fixture
def prompt_store(store_url: str) -> Iterator[PromptStore]:
    store = PromptStore.open(store_url)
    try:
        yield store
    finally:
        store.close()


def gateway_settings(store_url: str, **extra: object) -> Settings:
    return load_settings({"store_uri": store_url, "workers": 1, "serving.refresh_interval_s": 0.2, **extra}, environ={})


@pytest.fixture
def api(store_url: str) -> Iterator[httpx.Client]:
    """An httpx client on a real gateway serving the store at ``store_url`` (SQLite, then PostgreSQL)."""
    with contextlib.ExitStack() as stack:
        base_url = stack.enter_context(run_gateway_in_thread(gateway_settings(store_url)))
        yield stack.enter_context(httpx.Client(base_url=base_url, timeout=30))
