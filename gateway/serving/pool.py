"""ModelPool: model references to loaded versions, with single-flight loading and LRU unloading.

The request path never reads the store. Aliases are resolved from a ``RegistryView`` (an
in-memory copy of the registry) that the app replaces when its background refresher sees a
change. A reference the view does not know triggers one rate-limited refresh before 404,
so a model registered a moment ago on another replica is found at once (the refresh is told
the reference: an MLflow registry source follows only the models it is asked for).

An alias that moves away from a loaded version keeps answering with that version while the new
one loads and warms up beside it; requests switch once it is ready, and the old version is
unloaded when no alias points at it and its in-flight requests are done. A new version that
fails to load leaves the alias on the old one (``failures`` says why). A loaded version that the new
view no longer has, or has from another source (deleted; its model deleted and registered again), is
unloaded once its in-flight requests are done.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway import metrics
from gateway.errors import GatewayError, NotFound, ServiceUnavailable
from gateway.refs import LATEST, ModelRef
from gateway.serving.model import LoadedModel

logger = logging.getLogger("gateway.serving")

VersionKey = tuple[str, int]

MODEL_LOADS = metrics.counter(
    "gateway_model_loads_total", "Model version loads by outcome (loaded or failed).", ("model", "outcome")
)
ALIAS_SWAPS = metrics.counter("gateway_alias_swaps_total", "Aliases switched to a newly loaded version.", ("model",))


@dataclass(frozen=True, slots=True)
class RegistryView:
    """What the pool knows of the registry: aliases (``latest`` included), version sources and tags."""

    revision: int = -1
    aliases: Mapping[tuple[str, str], int] = field(default_factory=dict)
    sources: Mapping[VersionKey, str] = field(default_factory=dict)
    tags: Mapping[VersionKey, Mapping[str, str]] = field(default_factory=dict)

    def resolve(self, ref: ModelRef) -> VersionKey:
        if ref.version is not None:
            key = (ref.name, ref.version)
            if key not in self.sources:
                if not any(name == ref.name for name, _ in self.sources):
                    raise NotFound(f"Registered model {ref.name!r} not found.")
                raise NotFound(f"Registered model {ref.name!r} has no version {ref.version}.")
            return key
        alias = ref.alias or LATEST
        version = self.aliases.get((ref.name, alias))
        if version is None:
            if (ref.name, LATEST) not in self.aliases:
                raise NotFound(f"Registered model {ref.name!r} not found.")
            raise NotFound(f"Registered model {ref.name!r} has no alias {alias!r}.")
        return (ref.name, version)


# (name, version, source, version tags) -> a loaded, warmed model; blocking.
Loader = Callable[[str, int, str, Mapping[str, str]], LoadedModel]


class ModelPool:
    """Loads model versions on first use (one load per version at a time), keeps at most
    ``max_loaded`` of them, and unloads the least recently used one once it is idle."""

    def __init__(
        self,
        load: Loader,
        *,
        max_loaded: int,
        refresh: Callable[[ModelRef], Awaitable[None]] | None = None,
    ) -> None:
        self._load = load
        self._max_loaded = max_loaded
        self._refresh = refresh
        self.view = RegistryView()
        self._loaded: OrderedDict[VersionKey, LoadedModel] = OrderedDict()
        self._loading: dict[VersionKey, asyncio.Future[LoadedModel]] = {}
        self.failures: dict[VersionKey, str] = {}
        self._pinned_refs: tuple[ModelRef, ...] = ()
        # Aliases still answered by the version they pointed at while their new target loads.
        self._holds: dict[tuple[str, str], int] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # running loads, referenced until done

    def update_view(self, view: RegistryView) -> None:
        """Adopt a new registry view; aliases that moved away from a loaded version are held on it
        while their new version loads in the background."""
        for key in [k for k in self._loaded if view.sources.get(k) != self.view.sources.get(k)]:
            self._unload(self._loaded.pop(key), "deleted or replaced in the registry")
        holds: dict[tuple[str, str], int] = {}
        for alias_key, new_version in view.aliases.items():
            name = alias_key[0]
            previous = self._holds.get(alias_key, self.view.aliases.get(alias_key))
            if previous is None or previous == new_version:
                continue
            if (name, previous) in self._loaded and (name, new_version) not in self._loaded:
                holds[alias_key] = previous
                logger.info(
                    "Alias %s@%s moved from version %s to %s: loading it beside the old one",
                    name,
                    alias_key[1],
                    previous,
                    new_version,
                )
        self.view = view
        self._holds = holds
        for alias_key in holds:
            self._start(self._swap(alias_key, (alias_key[0], view.aliases[alias_key])))

    def _start(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _swap(self, alias_key: tuple[str, str], new_key: VersionKey) -> None:
        try:
            await self.get_version(new_key)
        except GatewayError as exc:
            logger.error(
                "Alias %s@%s keeps serving version %s: version %s failed to load: %s",
                alias_key[0],
                alias_key[1],
                self._holds.get(alias_key),
                new_key[1],
                exc.message,
            )
            return
        if self.view.aliases.get(alias_key) != new_key[1]:
            return  # moved again meanwhile; that move has its own swap
        old_version = self._holds.pop(alias_key, None)
        ALIAS_SWAPS.inc((alias_key[0],))
        logger.info("Alias %s@%s now serves version %s", alias_key[0], alias_key[1], new_key[1])
        if old_version is not None:
            self._retire_if_unreferenced((alias_key[0], old_version))

    def _retire_if_unreferenced(self, key: VersionKey) -> None:
        name, version = key
        referenced = (
            any(n == name and self._alias_version((n, a)) == version for (n, a) in self.view.aliases)
            or key in self._pinned_keys()
        )
        model = self._loaded.get(key)
        if referenced or model is None:
            return
        del self._loaded[key]
        self._unload(model, "no alias points at it")

    def _unload(self, model: LoadedModel, why: str) -> None:
        """Unload a version taken out of ``_loaded`` once its in-flight requests are done."""
        model.evicted = True
        logger.info("Unloading model %s version %s (%s)", model.name, model.version, why)
        # A request that already holds this model may not have counted itself in yet: wait a moment.
        asyncio.get_running_loop().call_later(1.0, self._unload_if_idle, model)

    def _alias_version(self, alias_key: tuple[str, str]) -> int | None:
        held = self._holds.get(alias_key)
        return held if held is not None else self.view.aliases.get(alias_key)

    def set_pinned(self, refs: tuple[ModelRef, ...]) -> None:
        """References whose current versions stay loaded regardless of LRU (the preloaded models)."""
        self._pinned_refs = refs

    def _pinned_keys(self) -> set[VersionKey]:
        keys = set()
        for ref in self._pinned_refs:
            try:
                keys.add(self.resolve_cached(ref))
            except GatewayError:
                continue
        return keys

    def resolve_cached(self, ref: ModelRef) -> VersionKey:
        """The version a reference is answered by now (an alias being swapped: its old version)."""
        if ref.version is None:
            held = self._holds.get((ref.name, ref.alias or LATEST))
            if held is not None:
                return (ref.name, held)
        return self.view.resolve(ref)

    async def resolve(self, ref: ModelRef) -> VersionKey:
        try:
            return self.resolve_cached(ref)
        except NotFound:
            if self._refresh is None:
                raise
        await self._refresh(ref)
        return self.resolve_cached(ref)

    def get_loaded(self, ref: ModelRef) -> LoadedModel | None:
        """The loaded model a reference points at, or None (then ``await get(ref)``): no await on the hot path."""
        if ref.version is not None:
            key = (ref.name, ref.version)
        else:
            version = self._alias_version((ref.name, ref.alias or LATEST))
            if version is None:
                return None
            key = (ref.name, version)
        model = self._loaded.get(key)
        if model is not None:
            self._loaded.move_to_end(key)
        return model

    async def get(self, ref: ModelRef) -> LoadedModel:
        return await self.get_version(await self.resolve(ref))

    async def get_version(self, key: VersionKey) -> LoadedModel:
        model = self._loaded.get(key)
        if model is not None:
            self._loaded.move_to_end(key)
            return model
        future = self._loading.get(key)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._loading[key] = future
            task = asyncio.get_running_loop().create_task(self._load_into(key, future))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        # shield: a cancelled request must not cancel a load other requests wait for.
        return await asyncio.shield(future)

    async def _load_into(self, key: VersionKey, future: asyncio.Future[LoadedModel]) -> None:
        name, version = key
        source = self.view.sources.get(key)
        try:
            if source is None:
                raise NotFound(f"Registered model {name!r} has no version {version}.")
            logger.info("Loading model %s version %s from %s", name, version, source)
            model = await asyncio.to_thread(self._load, name, version, source, self.view.tags.get(key, {}))
        except GatewayError as exc:
            MODEL_LOADS.inc((name, "failed"))
            self.failures[key] = exc.message
            logger.error("Model %s version %s failed to load: %s", name, version, exc.message)
            future.set_exception(exc)
        except Exception as exc:
            message = f"Model {name!r} version {version} failed to load: {type(exc).__name__}: {exc}"
            MODEL_LOADS.inc((name, "failed"))
            self.failures[key] = message
            logger.exception("Model %s version %s failed to load", name, version)
            future.set_exception(ServiceUnavailable(message, retry_after_s=5))
        else:
            MODEL_LOADS.inc((name, "loaded"))
            self.failures.pop(key, None)
            logger.info("Loaded model %s version %s (%s)", name, version, model.package.flavor)
            future.set_result(model)  # the requests that waited for it are answered by it either way
            if self.view.sources.get(key) != source:
                self._unload(model, "deleted or replaced in the registry while it loaded")
            else:
                self._loaded[key] = model
                self._evict()
        finally:
            self._loading.pop(key, None)
            # Retrieve the exception so asyncio does not warn when no request awaited it.
            if future.done() and not future.cancelled():
                future.exception()

    def _evict(self) -> None:
        pinned = self._pinned_keys() | {(n, v) for (n, _), v in self._holds.items()}
        evictable = [k for k in self._loaded if k not in pinned]
        while len(self._loaded) > self._max_loaded and evictable:
            key = evictable.pop(0)
            self._unload(self._loaded.pop(key), "least recently used")

    def _unload_if_idle(self, model: LoadedModel) -> None:
        if model.evicted and model.in_flight == 0 and not model.unloading:
            model.unloading = True
            asyncio.get_running_loop().run_in_executor(None, model.unload)

    def acquire(self, model: LoadedModel) -> None:
        model.in_flight += 1

    def release(self, model: LoadedModel) -> None:
        model.in_flight -= 1
        if model.evicted and model.in_flight == 0:
            self._unload_if_idle(model)

    def loaded(self) -> list[LoadedModel]:
        return list(self._loaded.values())

    def describe(self) -> dict[str, Any]:
        return {
            "loaded": [m.describe() for m in self._loaded.values()],
            "loading": [{"name": n, "version": v} for n, v in self._loading],
            "held_aliases": [
                {"name": n, "alias": a, "serving": v, "target": self.view.aliases.get((n, a))}
                for (n, a), v in self._holds.items()
            ],
            "failed": [{"name": n, "version": v, "error": msg} for (n, v), msg in self.failures.items()],
        }

    async def close(self) -> None:
        models = list(self._loaded.values())
        self._loaded.clear()
        for model in models:
            await asyncio.to_thread(model.unload)
