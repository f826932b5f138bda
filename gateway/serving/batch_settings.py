"""The batching, queue and deadline settings of one loaded model version, and where each came from.

Precedence, highest first: ``serving.models.<name>.<key>`` in the config, the version's registry tag
``gateway.<key>``, the server-wide ``serving.<key>``. Tags are read when the version loads; a tag
whose value does not parse fails the load with a message naming the tag (the version shows in
``/models`` ``failed`` and an alias keeps its old version).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from gateway.config import BATCH_PARSERS, ConfigError, ServingSettings
from gateway.errors import InvalidPackage

TAG_PREFIX = "gateway."
# The deadline is the server's (or the model config's) to set, not a registry tag's.
TAG_KEYS = ("batching", "max_batch_rows", "max_wait_ms", "max_queue_rows", "max_queue_requests")
_SERVER_DEFAULTS = ServingSettings()


@dataclass(frozen=True, slots=True)
class BatchSettings:
    """How one version's requests are queued and batched.

    ``BatchSettings.from_serving(settings.serving)`` holds the server-wide values; ``BatchSettings()``
    the defaults of ``ServingSettings``; ``BatchSettings(max_batch_rows=32, max_wait_ms=2.0)`` a
    variant, e.g. for a test. ``sources`` maps a key to where its value came from
    (``serving.max_batch_rows``, ``tag gateway.max_batch_rows``, ``serving.models.iris.max_batch_rows``).
    """

    batching: bool = _SERVER_DEFAULTS.batching
    max_batch_rows: int = _SERVER_DEFAULTS.max_batch_rows
    max_wait_ms: float = _SERVER_DEFAULTS.max_wait_ms
    max_queue_rows: int = _SERVER_DEFAULTS.max_queue_rows
    max_queue_requests: int = _SERVER_DEFAULTS.max_queue_requests
    request_timeout_s: float = _SERVER_DEFAULTS.request_timeout_s
    sources: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_serving(cls, serving: ServingSettings) -> BatchSettings:
        """The server-wide ``serving.<key>`` values, each with that source."""
        return cls(
            **{key: getattr(serving, key) for key in BATCH_PARSERS},
            sources={key: f"serving.{key}" for key in BATCH_PARSERS},
        )

    def describe(self) -> dict[str, Any]:
        """What ``GET /models`` shows: each value and its source."""
        return {
            f.name: {"value": getattr(self, f.name), "source": self.sources.get(f.name, f"serving.{f.name}")}
            for f in fields(self)
            if f.name != "sources"
        }


def resolve_batch_settings(name: str, version: int, tags: Mapping[str, str], serving: ServingSettings) -> BatchSettings:
    """The effective settings of ``name`` version ``version``; raises InvalidPackage for a bad tag."""
    server_wide = BatchSettings.from_serving(serving)
    values: dict[str, Any] = {}
    sources = dict(server_wide.sources)
    for key in TAG_KEYS:
        tag = TAG_PREFIX + key
        if tag not in tags:
            continue
        try:
            values[key] = BATCH_PARSERS[key](f"tag {tag}", tags[tag])
        except ConfigError as exc:
            raise InvalidPackage(f"Model {name!r} version {version} has an invalid registry tag: {exc}") from None
        sources[key] = f"tag {tag}"
    # Parsed and validated by gateway.config at start.
    for key, value in serving.models.get(name, {}).items():
        values[key] = value
        sources[key] = f"serving.models.{name}.{key}"
    return replace(server_wide, **values, sources=sources)
