"""The ``limits`` section of the settings: how gateway keys' rate limits and budgets are counted (gateway/limits/).

```yaml
limits:
  reserve_tokens: 1000        # what a /v1 call without max_tokens (or max_completion_tokens) reserves of its
                              # key's tokens per minute, until its real usage is known
  redis_failure: open         # Redis unreachable: open (the call goes through, counted and logged once) or
                              # closed (503); only with redis_url set
  redis_timeout_s: 0.25       # longest wait for Redis on one check before redis_failure applies
```

The limits themselves are per key (``rpm``, ``tpm``, ``budget_usd``: ``gateway keys create``). With ``redis_url`` set
they are exact across every worker and replica (one Lua script per check); without it each worker process counts
for itself (a replica with N workers lets a key make up to N times its limits).

Imports nothing of ours but gateway/config_values.py, so that gateway/config.py can import it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from gateway.config_values import ConfigError, integer, keys_of, positive, text

_KEYS = ("reserve_tokens", "redis_failure", "redis_timeout_s")
REDIS_FAILURE_MODES = ("open", "closed")


@dataclass(frozen=True, slots=True)
class LimitsSettings:
    """``Settings.limits``."""

    reserve_tokens: int = 1000
    redis_failure: str = "open"
    redis_timeout_s: float = 0.25

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON) for worker processes; :meth:`from_dict` reads it back."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LimitsSettings:
        return cls(**data)


def parse_limits_settings(raw: Mapping[str, Any]) -> LimitsSettings:
    """The ``limits`` section; a bad key or value raises ConfigError naming ``limits.<key>``."""
    data = keys_of("limits", raw or {}, _KEYS)
    values: dict[str, Any] = {}
    if "reserve_tokens" in data:
        values["reserve_tokens"] = integer(0)("limits.reserve_tokens", data["reserve_tokens"])
    if "redis_failure" in data:
        mode = text("limits.redis_failure", data["redis_failure"]).lower()
        if mode not in REDIS_FAILURE_MODES:
            raise ConfigError(
                f"limits.redis_failure: {data['redis_failure']!r} is not one of {', '.join(REDIS_FAILURE_MODES)} "
                "(open: calls go through while Redis is unreachable; closed: they get 503)."
            )
        values["redis_failure"] = mode
    if "redis_timeout_s" in data:
        values["redis_timeout_s"] = positive("limits.redis_timeout_s", data["redis_timeout_s"])
    return LimitsSettings(**values)
