"""GatewayState: what the endpoints share, built by the app's lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

from gateway.config import Settings
from gateway.errors import GatewayError
from gateway.http import BodyLimit
from gateway.refs import ModelRef, parse_model_ref
from gateway.serving.pool import ModelPool, RegistryView
from gateway.store.notify import ChangeNotifier
from gateway.store.registry import RegistrySnapshot, RegistryStore

logger = logging.getLogger("gateway.app")

# A reference the view does not know refreshes from the store at most this often.
_MIN_FORCED_REFRESH_INTERVAL_S = 0.25


def view_from_snapshot(snapshot: RegistrySnapshot) -> RegistryView:
    return RegistryView(
        revision=snapshot.revision,
        aliases=dict(snapshot.aliases),
        sources={key: version.source for key, version in snapshot.versions.items()},
        tags={key: version.tags for key, version in snapshot.versions.items() if version.tags},
    )


@dataclass(eq=False)
class GatewayState:
    settings: Settings
    store: RegistryStore
    pool: ModelPool = field(init=False)
    default_ref: ModelRef | None = None
    preload: tuple[ModelRef, ...] = ()
    preload_done: bool = False
    store_error: str | None = None
    notifier: ChangeNotifier | None = None
    _refresh_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _last_refresh: float = 0.0
    # Background loads started by alias moves; referenced here so they are not garbage-collected.
    _background: set[asyncio.Task[None]] = field(default_factory=set)
    invocation_body_limit: BodyLimit = field(init=False)  # serving.max_body_bytes, for read_raw_body

    def __post_init__(self) -> None:
        serving = self.settings.serving
        self.invocation_body_limit = BodyLimit("serving.max_body_bytes", serving.max_body_bytes)
        self.default_ref = parse_model_ref(serving.default_model) if serving.default_model else None
        self.preload = tuple(parse_model_ref(ref) for ref in serving.preload)

    async def refresh_view(self, *, rate_limited: bool = False) -> None:
        """Re-read the registry if its revision changed since the view was built.

        ``rate_limited`` (a request for a reference the view does not know) skips the read when
        one happened within the last quarter second, so unknown names cannot hammer the store.
        """
        async with self._refresh_lock:
            now = time.monotonic()
            if rate_limited and now - self._last_refresh < _MIN_FORCED_REFRESH_INTERVAL_S:
                return
            self._last_refresh = now
            try:
                revision = await asyncio.to_thread(self.store.revision)
                if revision == self.pool.view.revision:
                    return
                snapshot = await asyncio.to_thread(self.store.snapshot)
            except GatewayError as exc:
                self._note_store_error(exc.message)
                return
            except Exception as exc:  # the store is a dependency: keep serving from the last view
                self._note_store_error(f"{type(exc).__name__}: {exc}")
                return
            if self.store_error is not None:
                logger.info("Registry store reachable again")
            self.store_error = None
            self.pool.update_view(view_from_snapshot(snapshot))
            self._follow_preloaded()

    async def registry_changed(self) -> None:
        """After a write through this worker: see it here at once, and tell the other replicas."""
        await self.refresh_view()
        if self.notifier is not None:
            await self.notifier.publish(self.pool.view.revision)

    def _note_store_error(self, message: str) -> None:
        if self.store_error != message:
            logger.warning("Registry store unavailable, serving from the last known aliases: %s", message)
        self.store_error = message

    def _follow_preloaded(self) -> None:
        """Load what preloaded references point at once they resolve (a model registered after
        start, say); moved aliases are swapped by the pool itself."""
        if not self.preload_done:
            return
        loaded = {(m.name, m.version) for m in self.pool.loaded()}
        for ref in self.preload:
            try:
                key = self.pool.resolve_cached(ref)
            except GatewayError:
                continue
            if key in loaded:
                continue
            task = asyncio.get_running_loop().create_task(self._load_quietly(key))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _load_quietly(self, key: tuple[str, int]) -> None:
        # Failures are recorded in pool.failures (shown by /models and /health).
        with contextlib.suppress(GatewayError):
            await self.pool.get_version(key)

    async def preload_models(self) -> None:
        for ref in self.preload:
            try:
                await self.pool.get(ref)
            except GatewayError as exc:
                logger.error("Could not load %s: %s", ref, exc.message)
        self.preload_done = True

    def readiness(self) -> tuple[bool, dict[str, str], list[str]]:
        """(ready, {ref: why it failed}, [refs still loading]) for the models the gateway must serve.

        Computed from the current view, so a reference that could not be resolved at start becomes
        ready once it is registered and loaded, without a restart.
        """
        errors: dict[str, str] = {}
        loading: list[str] = []
        loaded = {(m.name, m.version) for m in self.pool.loaded()}
        for ref in self.preload:
            try:
                key = self.pool.resolve_cached(ref)
            except GatewayError as exc:
                errors[str(ref)] = exc.message
                continue
            if key in loaded:
                continue
            if key in self.pool.failures:
                errors[str(ref)] = self.pool.failures[key]
            else:
                loading.append(str(ref))
        return (self.preload_done and not errors and not loading, errors, loading)

    async def run_refresher(self) -> None:
        interval = self.settings.serving.refresh_interval_s
        while True:
            await asyncio.sleep(interval)
            await self.refresh_view()
