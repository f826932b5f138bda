"""Store fixtures: a migrated RegistryStore on each backend (``store_url`` runs SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gateway.store.registry import RegistryStore


@pytest.fixture
def store(store_url: str) -> Iterator[RegistryStore]:
    registry = RegistryStore.open(store_url)
    try:
        yield registry
    finally:
        registry.close()
