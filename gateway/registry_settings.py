"""Where served models and their aliases come from: ``registry.kind`` ``store`` (ours) or ``mlflow``.

``store`` reads versions and aliases from the gateway's own registry store (``store_uri``). ``mlflow``
reads them from an MLflow tracking server's registry over its REST API (``registry.tracking_uri``, else
the ``MLFLOW_TRACKING_URI`` environment variable, as MLflow's own client does; ``MLFLOW_TRACKING_TOKEN``
is sent as a bearer token and never stored in the settings). Packages an MLflow server holds are
downloaded into ``registry.cache_dir`` (default: ``mlflow-cache`` beside an SQLite store, else
``./.gateway/mlflow-cache``), shared by the workers of one replica.

Imports nothing of ours but gateway/config_values.py, so gateway/config.py can import it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from gateway.config_values import ConfigError, optional_text, text

REGISTRY_KINDS = ("store", "mlflow")
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
TRACKING_TOKEN_ENV = "MLFLOW_TRACKING_TOKEN"
CACHE_DIR_NAME = "mlflow-cache"


@dataclass(frozen=True, slots=True)
class RegistrySettings:
    kind: str = "store"
    tracking_uri: str | None = None
    cache_dir: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "tracking_uri": self.tracking_uri,
            "cache_dir": str(self.cache_dir) if self.cache_dir is not None else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RegistrySettings:
        cache_dir = data.get("cache_dir")
        return cls(
            kind=str(data.get("kind", "store")),
            tracking_uri=data.get("tracking_uri"),
            cache_dir=Path(cache_dir) if cache_dir else None,
        )


def registry_kind(key: str, value: Any) -> str:
    kind = text(key, value).lower()
    if kind not in REGISTRY_KINDS:
        raise ConfigError(f"{key}: {value!r} is not a registry kind; expected one of {', '.join(REGISTRY_KINDS)}.")
    return kind


def tracking_uri(key: str, value: Any) -> str | None:
    uri = optional_text(key, value)
    if uri is None:
        return None
    parsed = urlparse(uri)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ConfigError(
            f"{key}: {value!r} is not an MLflow tracking server URI; expected http://HOST:PORT or https://HOST."
        )
    return uri.rstrip("/")


def default_cache_dir(store_uri: str) -> Path:
    """``mlflow-cache`` beside an SQLite store's file, else under ``./.gateway``."""
    if store_uri.startswith("sqlite:///"):
        # sqlite:///./x.db is relative (its path "/./x.db"), sqlite:////abs/x.db absolute ("//abs/x.db").
        db = Path(unquote(urlparse(store_uri).path)[1:])
        return db.expanduser().parent / CACHE_DIR_NAME
    return Path(".gateway") / CACHE_DIR_NAME


def build_registry_settings(values: Mapping[str, Any], store_uri: str, environ: Mapping[str, str]) -> RegistrySettings:
    """The typed section from its parsed keys (``kind``, ``tracking_uri``, ``cache_dir``) and the environment."""
    kind = values.get("kind", "store")
    uri = values.get("tracking_uri")
    # Read only for kind mlflow: a team's MLFLOW_TRACKING_URI may name databricks or a local directory.
    if uri is None and kind == "mlflow" and environ.get(TRACKING_URI_ENV):
        uri = tracking_uri(f"{TRACKING_URI_ENV} (environment)", environ[TRACKING_URI_ENV])
    if kind == "mlflow" and uri is None:
        raise ConfigError(
            f"registry.kind: 'mlflow' needs the MLflow server's address: set registry.tracking_uri "
            f"(GATEWAY_REGISTRY_TRACKING_URI) or {TRACKING_URI_ENV}."
        )
    cache_dir = values.get("cache_dir") or default_cache_dir(store_uri)
    return RegistrySettings(kind=kind, tracking_uri=uri, cache_dir=cache_dir)
