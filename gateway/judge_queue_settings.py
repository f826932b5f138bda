"""The judge queue's settings: ``judges.queue`` (how jobs are delivered, retried and given up) and
``judges.workers`` (where the workers run).

```yaml
judges:
  workers: embedded        # embedded: the gateway runs workers in process; external: `gateway judges worker`
  queue:
    key_prefix: "gateway:judges:"  # Redis keys of the queue (streams, groups, retries, dead letters, pauses)
    min_idle_s: 30         # a job handed out this long ago and not acked is reclaimed (its worker died)
    reclaim_interval_s: 5  # how often each worker looks for such jobs
    max_deliveries: 5      # a job delivered more often goes to the dead letters (with an error assessment)
    max_job_age_s: 3600    # transient failures retry until the job is this old, then an error assessment
    retry_base_s: 1        # the first transient retry's delay, doubled each time (with jitter) ...
    retry_max_s: 60        # ... up to this; an upstream's Retry-After wins when longer
    claim_block_s: 1       # how long one claim waits for a job
```

Imports nothing of ours but gateway/config_values.py, as gateway/judge_settings.py (which holds these).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Final, Literal

from gateway.config_values import ConfigError, integer, keys_of, positive, text

EMBEDDED: Final = "embedded"
EXTERNAL: Final = "external"
WORKER_MODES: Final = (EMBEDDED, EXTERNAL)
DEFAULT_KEY_PREFIX: Final = "gateway:judges:"

_KEYS = (
    "key_prefix",
    "min_idle_s",
    "reclaim_interval_s",
    "max_deliveries",
    "max_job_age_s",
    "retry_base_s",
    "retry_max_s",
    "claim_block_s",
)
_DURATIONS = ("min_idle_s", "reclaim_interval_s", "max_job_age_s", "retry_base_s", "retry_max_s", "claim_block_s")


@dataclass(frozen=True, slots=True)
class JudgeQueueSettings:
    """``Settings.judges.queue``."""

    key_prefix: str = DEFAULT_KEY_PREFIX
    min_idle_s: float = 30.0
    reclaim_interval_s: float = 5.0
    max_deliveries: int = 5
    max_job_age_s: float = 3600.0
    retry_base_s: float = 1.0
    retry_max_s: float = 60.0
    claim_block_s: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JudgeQueueSettings:
        return cls(**data)


def parse_queue_settings(raw: Any) -> JudgeQueueSettings:
    """``judges.queue``; a bad key or value raises ConfigError naming ``judges.queue.<key>``."""
    data = keys_of("judges.queue", raw if raw is not None else {}, _KEYS)
    values: dict[str, Any] = {}
    if "key_prefix" in data:
        values["key_prefix"] = text("judges.queue.key_prefix", data["key_prefix"])
    for key in _DURATIONS:
        if key in data:
            values[key] = positive(f"judges.queue.{key}", data[key])
    if "max_deliveries" in data:
        values["max_deliveries"] = integer(1)("judges.queue.max_deliveries", data["max_deliveries"])
    settings = JudgeQueueSettings(**values)
    if settings.retry_max_s < settings.retry_base_s:
        raise ConfigError(
            f"judges.queue.retry_max_s: {settings.retry_max_s:g} must be >= judges.queue.retry_base_s "
            f"({settings.retry_base_s:g})."
        )
    return settings


def parse_worker_mode(raw: Any) -> Literal["embedded", "external"]:
    """``judges.workers``: ``embedded`` (the default) or ``external``."""
    if raw not in WORKER_MODES:
        raise ConfigError(f"judges.workers: {raw!r} must be one of {', '.join(WORKER_MODES)}.")
    return EMBEDDED if raw == EMBEDDED else EXTERNAL
