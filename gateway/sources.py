"""ModelSource: where model versions and aliases come from, as one interface with two implementations.

The serving path only knows ``RegistryView`` (gateway/serving/pool.py), an in-memory copy that the
background refresh replaces; it never asks a source anything per request. A source answers two
questions, both blocking and both asked off the event loop:

- ``read_view(known_revision, wanted)``: the registry as a ``RegistryView`` (None when its revision is
  ``known_revision``, nothing changed); ``wanted`` names the references the gateway is asked for, for
  sources that cannot list everything cheaply (MLflow). Raises when the source cannot be reached:
  the caller keeps serving from the last view.
- ``materialize(name, version, source)``: a local path or ``file:`` URI of the version's package,
  under one of ``artifact_roots(...)``, for the loader (gateway/serving/model.py) to read. Our store
  holds local sources already; MLflow's are downloaded into a verified local cache first.

``StoreSource`` (our store, ``registry.kind: store``) is here, outside gateway/serving (which never imports
the store); ``MlflowSource`` is in gateway/serving/mlflow_source.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

from gateway.config import Settings
from gateway.refs import ModelRef
from gateway.registry_settings import default_cache_dir
from gateway.serving.model import LoadedModel
from gateway.serving.pool import Loader, RegistryView
from gateway.store.registry import RegistrySnapshot, RegistryStore


class ModelSource(Protocol):
    """The source of model versions and aliases (see the module docstring)."""

    kind: str  # "store" or "mlflow": /health and the metrics name it

    def describe(self) -> str:
        """What it is, for log lines and /health ("the registry store", "MLflow at http://...")."""
        ...

    def read_view(self, known_revision: int, wanted: Iterable[ModelRef]) -> RegistryView | None: ...

    def materialize(self, name: str, version: int, source: str) -> str: ...

    def artifact_roots(self, configured: Sequence[Path]) -> tuple[Path, ...]:
        """The roots the loader may read from: the configured ones, and the source's own cache."""
        ...

    def close(self) -> None: ...


def view_from_snapshot(snapshot: RegistrySnapshot) -> RegistryView:
    return RegistryView(
        revision=snapshot.revision,
        aliases=dict(snapshot.aliases),
        sources={key: version.source for key, version in snapshot.versions.items()},
        tags={key: version.tags for key, version in snapshot.versions.items() if version.tags},
    )


class StoreSource:
    """Our own registry store: one revision number says whether anything changed; sources are local."""

    kind = "store"

    def __init__(self, store: RegistryStore) -> None:
        self.store = store

    def describe(self) -> str:
        return "the registry store"

    def read_view(self, known_revision: int, wanted: Iterable[ModelRef]) -> RegistryView | None:
        if self.store.revision() == known_revision:
            return None
        return view_from_snapshot(self.store.snapshot())

    def materialize(self, name: str, version: int, source: str) -> str:
        return source  # a local path or file: URI, confined to the artifact roots by the loader

    def artifact_roots(self, configured: Sequence[Path]) -> tuple[Path, ...]:
        return tuple(configured)

    def close(self) -> None:
        """The store belongs to the app, which closes it."""


def make_source(settings: Settings, store: RegistryStore) -> ModelSource:
    """The source ``registry.kind`` names: our store, or the MLflow server at ``registry.tracking_uri``."""
    registry = settings.registry
    if registry.kind != "mlflow":
        return StoreSource(store)
    from gateway.serving.mlflow_source import MlflowSource  # httpx client and cache: only when configured

    assert registry.tracking_uri is not None  # load_settings refuses kind mlflow without one
    return MlflowSource(registry.tracking_uri, registry.cache_dir or default_cache_dir(settings.store_uri))


def source_loader(source: ModelSource, load: Callable[..., LoadedModel], artifact_roots: Sequence[Path]) -> Loader:
    """The pool's loader: the package made local by ``source`` (a download, for MLflow), then ``load``
    (gateway.serving.model.load_model with the serving settings bound) confined to the source's roots."""
    roots = source.artifact_roots(artifact_roots)

    def load_version(name: str, version: int, where: str, tags: Mapping[str, str]) -> LoadedModel:
        return load(name, version, source.materialize(name, version, where), tags, artifact_roots=roots)

    return load_version
