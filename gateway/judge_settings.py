"""The ``judges`` section of the settings: which LLM route runs the built-in judges, and the bounds on
judge calls (judges/runner.py) and evaluation jobs.

```yaml
judges:
  route: gpt-4o-mini      # the LLM route of the built-in judges; no default
  call_timeout_s: 60      # one judge call, retries included: then an error assessment (timeout)
  route_concurrency: 8    # judge calls in flight per LLM route, per process
  concurrency: 16         # judge jobs in flight per embedded worker; evaluation target calls per process
  max_trace_items: 1000   # most stored traces one evaluation run may take (the cap is named in its answer)
  workers: embedded       # and queue: {...}: the judge job queue (gateway/judge_queue_settings.py)
  online: [...]           # judges on live traffic, and online_buffer etc.: gateway/judge_online_settings.py
  export: {mlflow: ...}   # assessments also logged to MLflow as feedback: gateway/judge_export_settings.py
  code: [...]             # code judges (Python functions, no LLM call): gateway/judge_code_settings.py
```

``route`` has no default: a built-in judge asked for while it is unset is refused with a 400 naming
``judges.route``, not sent somewhere by guess. A custom judge names its own route.

Imports nothing of ours but gateway/config_values.py, gateway/judge_queue_settings.py,
gateway/judge_online_settings.py, gateway/judge_code_settings.py and gateway/judge_export_settings.py (which
import only that, and gateway/registry_settings.py), so that gateway/config.py can import it (the recipe in
its docstring).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from gateway.config_values import ConfigError, integer, keys_of, optional_text, positive
from gateway.judge_code_settings import CodeJudgeSettings, parse_code_judges
from gateway.judge_export_settings import JudgeExportSettings, parse_export_settings
from gateway.judge_online_settings import ONLINE_KEYS, OnlineSettings, parse_online_settings
from gateway.judge_queue_settings import EMBEDDED, JudgeQueueSettings, parse_queue_settings, parse_worker_mode

_KEYS = (
    "route", "call_timeout_s", "route_concurrency", "concurrency", "max_trace_items", "queue", "workers", "export",
    "code",
    *ONLINE_KEYS,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class JudgesSettings:
    """``Settings.judges``."""

    route: str | None = None
    call_timeout_s: float = 60.0
    route_concurrency: int = 8
    concurrency: int = 16
    max_trace_items: int = 1000
    queue: JudgeQueueSettings = JudgeQueueSettings()
    workers: str = EMBEDDED  # embedded | external
    online: OnlineSettings = field(default_factory=OnlineSettings)  # judges on live traffic (online* keys)
    export: JudgeExportSettings = JudgeExportSettings()  # assessments also sent elsewhere (MLflow)
    code: tuple[CodeJudgeSettings, ...] = ()  # code judges: Python functions, no LLM call

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON) for worker processes; :meth:`from_dict` reads it back."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JudgesSettings:
        values = dict(data)
        if isinstance(values.get("queue"), Mapping):
            values["queue"] = JudgeQueueSettings.from_dict(values["queue"])
        values["online"] = OnlineSettings.from_dict(data.get("online", {}))
        values["export"] = JudgeExportSettings.from_dict(data.get("export") or {})
        values["code"] = tuple(CodeJudgeSettings.from_dict(entry) for entry in data.get("code", ()))
        return cls(**values)


def parse_judges_settings(raw: Mapping[str, Any]) -> JudgesSettings:
    """The ``judges`` section; a bad key or value raises ConfigError naming ``judges.<key>``."""
    data = keys_of("judges", raw or {}, _KEYS)
    values: dict[str, Any] = {}
    if "route" in data:
        route = data["route"]
        if route is not None and not isinstance(route, str):
            raise ConfigError(f"judges.route: {route!r} must be the name of an LLM route (a string).")
        values["route"] = optional_text("judges.route", route)
    if "call_timeout_s" in data:
        values["call_timeout_s"] = positive("judges.call_timeout_s", data["call_timeout_s"])
    for key in ("route_concurrency", "concurrency", "max_trace_items"):
        if key in data:
            values[key] = integer(1)(f"judges.{key}", data[key])
    values["queue"] = parse_queue_settings(data.get("queue"))
    if "workers" in data:
        values["workers"] = parse_worker_mode(data["workers"])
    values["online"] = parse_online_settings(data)
    values["export"] = parse_export_settings(data.get("export"))
    values["code"] = parse_code_judges(data.get("code"))
    return JudgesSettings(**values)
