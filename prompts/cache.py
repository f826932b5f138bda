"""The in-memory prompt catalog every replica (every worker) serves reads from.

``refresh()`` checks the store's revision (one integer) and reloads the whole catalog when it
moved; ``run_refresher`` does that every ``serving.refresh_interval_s``, and ``gateway.app`` also
calls ``refresh`` when Redis announces a change and right after a write through this worker.
Requests only ever read ``cache.catalog``: a slow or unreachable store never stalls them, it only
delays new changes (and is logged once).
"""

from __future__ import annotations

import asyncio
import logging

from prompts.catalog import Catalog
from prompts.store import PromptStore

logger = logging.getLogger("prompts.cache")


class PromptCache:
    """Holds the current :class:`Catalog`; replaced whole, never mutated, so readers need no lock."""

    def __init__(self, store: PromptStore) -> None:
        self.store = store
        self.catalog = Catalog.empty()
        self.store_error: str | None = None
        self._lock = asyncio.Lock()

    async def refresh(self) -> None:
        """Reload the catalog if the store changed since it was read; keep the old one on failure."""
        async with self._lock:
            try:
                revision = await asyncio.to_thread(self.store.revision)
                if revision == self.catalog.revision:
                    return
                catalog = await asyncio.to_thread(self.store.load_catalog)
            except Exception as exc:  # the store is a dependency: keep serving the last catalog
                message = f"{type(exc).__name__}: {exc}"
                if self.store_error != message:
                    logger.warning("Prompt store unavailable, serving the last known prompts: %s", message)
                self.store_error = message
                return
            if self.store_error is not None:
                logger.info("Prompt store reachable again")
            self.store_error = None
            self.catalog = catalog

    def refresh_sync(self) -> None:
        """Load the catalog now (start-up, command line): errors propagate."""
        self.catalog = self.store.load_catalog()

    async def run_refresher(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            await self.refresh()
