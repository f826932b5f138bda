"""GatewayState: what the endpoints share, built by the app's lifespan.

The pool's view of the registry comes from ``source`` (gateway/sources.py): our own store or an
MLflow server, read by the background refresh only. When the source cannot be read, the last view keeps
serving, ``source_error`` says why (shown by /health) and ``gateway_registry_refresh_failures_total`` counts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

from gateway import metrics
from gateway.config import Settings
from gateway.errors import GatewayError
from gateway.http import BodyLimit
from gateway.refs import ModelRef, parse_model_ref
from gateway.serving.pool import ModelPool
from gateway.sources import ModelSource
from gateway.store.notify import ChangeNotifier
from gateway.store.registry import RegistryStore

logger = logging.getLogger("gateway.app")

# A reference the view does not know refreshes from the store at most this often.
_MIN_FORCED_REFRESH_INTERVAL_S = 0.25
_MAX_ASKED = 1000

REFRESH_FAILURES = metrics.counter(
    "gateway_registry_refresh_failures_total",
    "Registry refreshes that could not read the source of models (store or mlflow); the last view kept serving.",
    ("registry",),
)


@dataclass(eq=False)
class GatewayState:
    settings: Settings
    store: RegistryStore
    source: ModelSource  # where versions and aliases come from: StoreSource(store), or MLflow
    pool: ModelPool = field(init=False)
    default_ref: ModelRef | None = None
    preload: tuple[ModelRef, ...] = ()
    preload_done: bool = False
    source_error: str | None = None
    notifier: ChangeNotifier | None = None
    _refresh_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _last_refresh: float = 0.0
    _asked: set[ModelRef] = field(default_factory=set)  # unknown references waiting for the next read
    # Background loads started by alias moves; referenced here so they are not garbage-collected.
    _background: set[asyncio.Task[None]] = field(default_factory=set)
    invocation_body_limit: BodyLimit = field(init=False)  # serving.max_body_bytes, for read_raw_body

    def __post_init__(self) -> None:
        serving = self.settings.serving
        self.invocation_body_limit = BodyLimit("serving.max_body_bytes", serving.max_body_bytes)
        self.default_ref = parse_model_ref(serving.default_model) if serving.default_model else None
        self.preload = tuple(parse_model_ref(ref) for ref in serving.preload)

    @property
    def store_error(self) -> str | None:
        """Why our own store could not be read (``registry.kind: store``), for /health."""
        return self.source_error if self.source.kind == "store" else None

    async def refresh_view(self, *, rate_limited: bool = False, wanted: ModelRef | None = None) -> None:
        """Re-read the registry if its revision changed since the view was built.

        ``rate_limited`` (a request for a reference the view does not know, ``wanted``) reads at most once a
        quarter second, so unknown names cannot hammer the source: a request that comes sooner waits for the
        next read, which covers every reference asked for meanwhile (at most ``_MAX_ASKED`` of them; beyond,
        the request is answered from the view it has). An MLflow source reads only the models it is asked for.
        """
        if wanted is not None and len(self._asked) < _MAX_ASKED:
            self._asked.add(wanted)
        while True:
            async with self._refresh_lock:
                wait = _MIN_FORCED_REFRESH_INTERVAL_S - (time.monotonic() - self._last_refresh)
                if not rate_limited or wait <= 0:
                    await self._read_source()
                    return
                if wanted is None or wanted not in self._asked:
                    return  # a read since this call began covered it
            await asyncio.sleep(wait)

    async def _read_source(self) -> None:
        """One read of the source (the refresh lock held): a new view for the pool when something changed."""
        self._last_refresh = time.monotonic()
        refs = (*self.preload, *self._asked)
        self._asked = set()
        try:
            view = await asyncio.to_thread(self.source.read_view, self.pool.view.revision, refs)
        except GatewayError as exc:
            self._note_source_error(exc.message)
            return
        except Exception as exc:  # the source is a dependency: keep serving from the last view
            self._note_source_error(f"{type(exc).__name__}: {exc}")
            return
        if self.source_error is not None:
            logger.info("Registry source reachable again: %s", self.source.describe())
        self.source_error = None
        if view is None:
            return
        self.pool.update_view(view)
        self._follow_preloaded()

    async def registry_changed(self) -> None:
        """After a write through this worker: see it here at once, and tell the other replicas."""
        await self.refresh_view()
        if self.notifier is not None:
            await self.notifier.publish(self.pool.view.revision)

    def _note_source_error(self, message: str) -> None:
        REFRESH_FAILURES.inc((self.source.kind,))
        if self.source_error != message:
            logger.warning(
                "Registry source (%s) unavailable, serving from the last known aliases: %s",
                self.source.describe(),
                message,
            )
        self.source_error = message

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
