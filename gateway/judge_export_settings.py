"""``judges.export``: where judges' assessments are sent besides the gateway's store (judges/mlflow_feedback.py).

```yaml
judges:
  export:
    mlflow:
      tracking_uri: http://mlflow:5000   # required: the MLflow tracking server the traces are exported to
      token_env: MLFLOW_TRACKING_TOKEN   # the variable holding a bearer token, when it is set (never stored here)
      queue_size: 10000                  # assessments waiting to be sent; more are dropped (queue_full)
      concurrency: 8                     # requests to MLflow in flight
      timeout_s: 10                      # one request
      trace_wait_s: 120                  # how long an assessment waits for its trace to reach MLflow
```

``judges.export.mlflow: http://mlflow:5000`` is the short form (the rest at their defaults). Each
assessment a judge writes on a traced call is logged to MLflow as feedback on that call's trace
(``tr-<trace id>``): the trace reaches MLflow through the span exporter (``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``
at MLflow's ``/v1/traces``), and MLflow refuses feedback on a trace it does not hold yet, so an assessment
is retried until ``trace_wait_s`` has passed since it was written.

Imports nothing of ours but gateway/config_values.py and gateway/registry_settings.py (which imports only
that), so that gateway/config.py can import it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Final

from gateway.config_values import ConfigError, integer, keys_of, positive, text
from gateway.registry_settings import TRACKING_TOKEN_ENV, tracking_uri

_EXPORT_KEYS: Final = ("mlflow",)
_MLFLOW_KEYS: Final = ("tracking_uri", "token_env", "queue_size", "concurrency", "timeout_s", "trace_wait_s")


@dataclass(frozen=True, slots=True)
class MlflowFeedbackSettings:
    """``judges.export.mlflow``."""

    tracking_uri: str
    token_env: str = TRACKING_TOKEN_ENV
    queue_size: int = 10_000
    concurrency: int = 8
    timeout_s: float = 10.0
    trace_wait_s: float = 120.0


@dataclass(frozen=True, slots=True)
class JudgeExportSettings:
    """``judges.export``: none by default."""

    mlflow: MlflowFeedbackSettings | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JudgeExportSettings:
        mlflow = data.get("mlflow")
        return cls(mlflow=MlflowFeedbackSettings(**mlflow) if mlflow else None)


def parse_export_settings(raw: Any) -> JudgeExportSettings:
    """``judges.export``; a bad key or value raises ConfigError naming ``judges.export.<key>``."""
    if raw is None:
        return JudgeExportSettings()
    data = keys_of("judges.export", raw, _EXPORT_KEYS)
    mlflow = data.get("mlflow")
    if mlflow is None:
        return JudgeExportSettings()
    key = "judges.export.mlflow"
    if isinstance(mlflow, str):
        mlflow = {"tracking_uri": mlflow}
    values = dict(keys_of(key, mlflow, _MLFLOW_KEYS))
    uri = tracking_uri(f"{key}.tracking_uri", values.get("tracking_uri"))
    if uri is None:
        raise ConfigError(f"{key}.tracking_uri: required (the MLflow tracking server, http://HOST:PORT).")
    values["tracking_uri"] = uri
    if "token_env" in values:
        values["token_env"] = text(f"{key}.token_env", values["token_env"])
    for name in ("queue_size", "concurrency"):
        if name in values:
            values[name] = integer(1)(f"{key}.{name}", values[name])
    for name in ("timeout_s", "trace_wait_s"):
        if name in values:
            values[name] = positive(f"{key}.{name}", values[name])
    return JudgeExportSettings(mlflow=MlflowFeedbackSettings(**values))
