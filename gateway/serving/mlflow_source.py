"""MlflowSource: model versions and aliases from an MLflow tracking server's registry (``registry.kind: mlflow``).

Read over MLflow's REST API with httpx, only from the background refresh (gateway/state.py) and the
loader's thread, never per request:

- ``GET /api/2.0/mlflow/registered-models/get``: a model's aliases and latest versions;
- ``GET /api/2.0/mlflow/model-versions/get``: a version's source, status and tags;
- ``GET /api/2.0/mlflow/model-versions/get-download-uri``: where its files are. This also resolves
  MLflow 3's logged-model sources (``models:/m-<id>``) and ``runs:/`` sources to artifact URIs;
- ``GET /api/2.0/mlflow-artifacts/artifacts?path=`` (list) and ``/api/2.0/mlflow-artifacts/artifacts/<path>``
  (get): the artifact proxy of a server run with ``--serve-artifacts``, for ``mlflow-artifacts:`` URIs.

MLflow cannot say "nothing changed since revision N", and a registry may hold many models: the source
follows only the models the gateway is asked for (preloaded references, and a reference a request names
that the view does not know, which triggers one rate-limited refresh), re-reads them on every refresh and
hashes what it read into the view's revision, so an unchanged registry leaves the pool alone.

Packages behind ``mlflow-artifacts:`` URIs are downloaded into the ``ArtifactCache``
(gateway/serving/artifact_cache.py); ``file:`` URIs and plain paths are loaded in place, confined to
the configured artifact roots like every source of our own store.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse

import httpx

from gateway.errors import DependencyError, InvalidPackage
from gateway.refs import LATEST, ModelRef
from gateway.registry_settings import TRACKING_TOKEN_ENV
from gateway.serving.artifact_cache import ArtifactCache
from gateway.serving.pool import RegistryView

logger = logging.getLogger("gateway.serving")

REGISTRY_API = "/api/2.0/mlflow"
ARTIFACTS_API = "/api/2.0/mlflow-artifacts/artifacts"
READY = "READY"
_API_TIMEOUT = httpx.Timeout(10.0, connect=3.0)
_DOWNLOAD_TIMEOUT = httpx.Timeout(60.0, connect=3.0)
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]+):")
_MAX_LISTED_FILES = 10_000


class MlflowUnreachable(DependencyError):
    """The MLflow server did not answer, or answered with an error that is not "no such model"."""


class MlflowRegistryClient:
    """The few MLflow REST calls the source needs; blocking (called in threads)."""

    def __init__(self, tracking_uri: str, token: str | None = None) -> None:
        self.tracking_uri = tracking_uri.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.tracking_uri, headers=headers, timeout=_API_TIMEOUT)

    def close(self) -> None:
        self._http.close()

    def _get(self, path: str, params: Mapping[str, str]) -> dict[str, Any] | None:
        """The JSON answer, or None for MLflow's 404 RESOURCE_DOES_NOT_EXIST."""
        try:
            response = self._http.get(path, params=params)
        except httpx.HTTPError as exc:
            raise MlflowUnreachable(
                f"MLflow at {self.tracking_uri} is unreachable ({type(exc).__name__}: {exc})"
            ) from None
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise MlflowUnreachable(
                f"MLflow at {self.tracking_uri} answered {response.status_code} to GET {path}: {response.text[:300]}"
            )
        body: dict[str, Any] = response.json()
        return body

    def registered_model(self, name: str) -> dict[str, Any] | None:
        body = self._get(f"{REGISTRY_API}/registered-models/get", {"name": name})
        return None if body is None else dict(body.get("registered_model") or {})

    def model_version(self, name: str, version: int) -> dict[str, Any] | None:
        body = self._get(f"{REGISTRY_API}/model-versions/get", {"name": name, "version": str(version)})
        return None if body is None else dict(body.get("model_version") or {})

    def download_uri(self, name: str, version: int) -> str | None:
        body = self._get(f"{REGISTRY_API}/model-versions/get-download-uri", {"name": name, "version": str(version)})
        return None if body is None else str(body.get("artifact_uri") or "") or None

    def list_artifacts(self, path: str) -> list[dict[str, Any]]:
        body = self._get(ARTIFACTS_API, {"path": path})
        if body is None:
            raise InvalidPackage(f"MLflow at {self.tracking_uri} has no artifacts at {path!r}.")
        return list(body.get("files") or [])

    def download_file(self, path: str, into: Path, expected_size: int | None) -> None:
        """Stream one artifact into ``into``; a size other than the listing's is a failed download."""
        url = f"{ARTIFACTS_API}/{quote(path)}"
        written = 0
        try:
            with self._http.stream("GET", url, timeout=_DOWNLOAD_TIMEOUT) as response:
                if response.status_code != 200:
                    raise MlflowUnreachable(
                        f"MLflow at {self.tracking_uri} answered {response.status_code} to GET {url}"
                    )
                with into.open("wb") as handle:
                    for chunk in response.iter_bytes(1 << 20):
                        handle.write(chunk)
                        written += len(chunk)
        except httpx.HTTPError as exc:
            raise MlflowUnreachable(
                f"Downloading {path!r} from MLflow at {self.tracking_uri} failed ({type(exc).__name__}: {exc})"
            ) from None
        if expected_size is not None and written != expected_size:
            raise MlflowUnreachable(
                f"Downloading {path!r} from MLflow at {self.tracking_uri} gave {written} bytes; "
                f"the listing says {expected_size}"
            )


def _view_revision(
    aliases: Mapping[tuple[str, str], int],
    sources: Mapping[tuple[str, int], str],
    tags: Mapping[tuple[str, int], Mapping[str, str]],
) -> int:
    """A stable number for what was read: equal reads give equal revisions (the pool is left alone)."""
    content = json.dumps(
        [
            sorted([list(k), v] for k, v in aliases.items()),
            sorted([list(k), v] for k, v in sources.items()),
            sorted([list(k), sorted(v.items())] for k, v in tags.items()),
        ]
    )
    return int.from_bytes(hashlib.blake2b(content.encode(), digest_size=7).digest(), "big")


class MlflowSource:
    """Versions and aliases from MLflow's registry; packages through its artifact proxy into a local cache."""

    kind = "mlflow"

    def __init__(self, tracking_uri: str, cache_dir: Path, *, token: str | None = None) -> None:
        self.client = MlflowRegistryClient(
            tracking_uri, token if token is not None else os.environ.get(TRACKING_TOKEN_ENV)
        )
        self.cache = ArtifactCache(cache_dir)
        self._followed: set[str] = set()  # model names found in MLflow, re-read on every refresh
        self._followed_versions: set[tuple[str, int]] = set()  # versions asked for by number, found in MLflow
        self._download_uris: dict[tuple[str, int, str], str] = {}  # a version's files do not move

    def describe(self) -> str:
        return f"MLflow at {self.client.tracking_uri}"

    def close(self) -> None:
        self.client.close()

    def artifact_roots(self, configured: Sequence[Path]) -> tuple[Path, ...]:
        return (*configured, self.cache.directory)

    def read_view(self, known_revision: int, wanted: Iterable[ModelRef]) -> RegistryView | None:
        wanted = tuple(wanted)
        aliases: dict[tuple[str, str], int] = {}
        sources: dict[tuple[str, int], str] = {}
        tags: dict[tuple[str, int], Mapping[str, str]] = {}
        for name in sorted(self._followed | {ref.name for ref in wanted}):
            model = self.client.registered_model(name)
            if model is None:  # asked for, not in MLflow: not followed (unknown names stay bounded)
                self._followed.discard(name)
                self._followed_versions = {key for key in self._followed_versions if key[0] != name}
                continue
            self._followed.add(name)
            versions = {int(v["version"]) for v in model.get("latest_versions") or []}
            needed = {ref.version for ref in wanted if ref.name == name and ref.version is not None}
            needed |= {v for n, v in self._followed_versions if n == name}
            by_number = set(needed)
            if versions:
                aliases[(name, LATEST)] = max(versions)
                needed.add(max(versions))
            for entry in model.get("aliases") or []:
                aliases[(name, str(entry["alias"]))] = int(entry["version"])
                needed.add(int(entry["version"]))
            for version in sorted(needed):
                found = self._read_version(name, version)
                if found is None:
                    self._followed_versions.discard((name, version))
                    continue
                if version in by_number:
                    self._followed_versions.add((name, version))
                sources[(name, version)], version_tags = found
                if version_tags:
                    tags[(name, version)] = version_tags
        revision = _view_revision(aliases, sources, tags)
        if revision == known_revision:
            return None
        return RegistryView(revision=revision, aliases=aliases, sources=sources, tags=tags)

    def _read_version(self, name: str, version: int) -> tuple[str, dict[str, str]] | None:
        """(where its files are, its tags) for a READY version; None for a missing or unfinished one."""
        entry = self.client.model_version(name, version)
        if entry is None or entry.get("status", READY) != READY:
            return None
        source = str(entry.get("source") or "")
        key = (name, version, source)
        uri = self._download_uris.get(key)
        if uri is None:
            uri = self.client.download_uri(name, version)
            if uri is None:
                return None
            self._download_uris[key] = uri
        return uri, {str(t["key"]): str(t.get("value", "")) for t in entry.get("tags") or []}

    def materialize(self, name: str, version: int, source: str) -> str:
        """A local path of the package: downloaded through the artifact proxy, or a local URI as it is."""
        scheme = _SCHEME.match(source)
        kind = scheme.group(1).lower() if scheme else "file"
        if kind == "file":
            return source  # loaded in place, confined to the configured artifact roots by the loader
        if kind != "mlflow-artifacts":
            raise InvalidPackage(
                f"Model {name!r} version {version} is stored at {source!r}; the gateway downloads mlflow-artifacts: "
                "URIs (an MLflow server run with --serve-artifacts) and reads file: URIs under the artifact roots."
            )
        path = urlparse(source).path.strip("/")
        key = f"{self.client.tracking_uri} {source}"
        return str(self.cache.get(key, lambda into: self._download_tree(path, into, [0])))

    def _download_tree(self, path: str, into: Path, count: list[int]) -> None:
        for entry in self.client.list_artifacts(path):
            child = str(entry.get("path") or "")
            if not child or "/" in child or child in (".", ".."):
                raise InvalidPackage(f"MLflow listed an artifact named {child!r} under {path!r}; refusing it.")
            count[0] += 1
            if count[0] > _MAX_LISTED_FILES:
                raise InvalidPackage(f"The package at {path!r} holds more than {_MAX_LISTED_FILES} files.")
            remote = f"{path}/{child}" if path else child
            if entry.get("is_dir"):
                (into / child).mkdir()
                self._download_tree(remote, into / child, count)
            else:
                size = entry.get("file_size")
                self.client.download_file(remote, into / child, int(size) if size is not None else None)
