"""Settings: one object, built once at start and passed down.

Precedence, highest first: CLI flag, ``GATEWAY_*`` environment variable, YAML config file
(``--config FILE`` or ``GATEWAY_CONFIG``), default. Every value is validated here; a bad one
raises ``ConfigError`` naming the key, where it came from and the value, and the server
refuses to start.

Every parameter is one ``Param`` line in ``PARAMS``: its dotted config-file key, its env var,
its parser and default. The CLI's ``--help`` and ``docs/configuration.md`` describe the same table.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gateway.refs import parse_model_ref

ENV_PREFIX = "GATEWAY_"
GATEWAY_CONFIG = "GATEWAY_CONFIG"
DEFAULT_STORE_URI = "sqlite:///./.gateway/store.db"
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names the key, its source and value."""


@dataclass(frozen=True, slots=True)
class ServingSettings:
    default_model: str | None = None
    preload: tuple[str, ...] = ()
    max_loaded_versions: int = 16
    refresh_interval_s: float = 2.0
    intra_op_num_threads: int | None = None
    max_body_bytes: int = 100 * 1024 * 1024
    inline_max_us: float = 100.0
    # Batching, queue bounds and deadlines (gateway.serving.batcher); ``models`` overrides them per
    # model name, version tags ``gateway.<key>`` sit between the two (see batch_settings.py).
    batching: bool = True
    max_batch_rows: int = 256
    max_wait_ms: float = 0.0
    max_queue_rows: int = 8192
    max_queue_requests: int = 1024
    request_timeout_s: float = 60.0
    models: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TelemetrySettings:
    """The trace-summary writer (gateway.telemetry.store_sink); span export follows the OTEL_* variables."""

    summary_buffer: int = 10_000
    summary_batch: int = 500
    summary_flush_interval_s: float = 1.0
    shutdown_timeout_s: float = 5.0


@dataclass(frozen=True, slots=True)
class Settings:
    store_uri: str = DEFAULT_STORE_URI
    redis_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    log_level: str = "info"
    access_log: bool = False
    artifact_roots: tuple[Path, ...] = (Path("./models"),)
    serving: ServingSettings = field(default_factory=ServingSettings)
    telemetry: TelemetrySettings = field(default_factory=TelemetrySettings)
    # Sections that later features read; kept as validated-to-be-mappings raw dicts for now.
    llm: Mapping[str, Any] = field(default_factory=dict)
    auth: Mapping[str, Any] = field(default_factory=dict)

    @property
    def default_model(self) -> str | None:
        return self.serving.default_model

    def resolved_intra_op_threads(self) -> int:
        """Threads per ONNX session: workers x threads <= cores unless configured."""
        if self.serving.intra_op_num_threads is not None:
            return self.serving.intra_op_num_threads
        return max(1, (os.cpu_count() or 1) // max(1, self.workers))

    def onnx_allow_spinning(self) -> bool:
        """onnxruntime's idle threads spin (burning a core) only when one worker has the cores to itself."""
        return self.workers <= 1


# --- parsers: each takes (key, raw value) and raises ConfigError with the key -------------------


def _int(minimum: int, maximum: int | None = None) -> Callable[[str, Any], int]:
    def parse(key: str, value: Any) -> int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: {value!r} is not an integer.")
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: {value!r} is not an integer.") from None
        if number < minimum or (maximum is not None and number > maximum):
            bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
            raise ConfigError(f"{key}: {value!r} is out of range; expected an integer {bound}.")
        return number

    return parse


def _optional_int(minimum: int) -> Callable[[str, Any], int | None]:
    inner = _int(minimum)

    def parse(key: str, value: Any) -> int | None:
        if value is None or value == "" or (isinstance(value, str) and value.lower() in {"auto", "none"}):
            return None
        return inner(key, value)

    return parse


def _float(*, minimum: float, inclusive: bool) -> Callable[[str, Any], float]:
    def parse(key: str, value: Any) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: {value!r} is not a number.") from None
        if not (number >= minimum if inclusive else number > minimum):  # also refuses NaN
            raise ConfigError(f"{key}: {value!r} must be a number {'>=' if inclusive else '>'} {minimum:g}.")
        return number

    return parse


_float_positive = _float(minimum=0, inclusive=False)
_float_non_negative = _float(minimum=0, inclusive=True)


def _bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{key}: {value!r} is not a boolean (use true or false).")


def _str(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{key}: {value!r} must be a non-empty string.")
    return value.strip()


def _optional_str(key: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    return _str(key, value)


def _store_uri(key: str, value: Any) -> str:
    uri = _str(key, value)
    scheme = uri.split(":", 1)[0].split("+", 1)[0].lower()
    if scheme not in {"sqlite", "postgresql", "postgres"} or "://" not in uri:
        raise ConfigError(
            f"{key}: {value!r} is not a supported store URI; expected sqlite:///PATH or "
            "postgresql+psycopg://USER@HOST/DB."
        )
    return uri


def _redis_url(key: str, value: Any) -> str | None:
    url = _optional_str(key, value)
    if url is not None and not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"{key}: {value!r} is not a Redis URL (redis://HOST:PORT/DB).")
    return url


def _log_level(key: str, value: Any) -> str:
    level = _str(key, value).lower()
    if level not in LOG_LEVELS:
        raise ConfigError(f"{key}: {value!r} is not a log level; expected one of {', '.join(LOG_LEVELS)}.")
    return level


def _port(key: str, value: Any) -> int:
    return _int(0, 65535)(key, value)


def _model_ref(key: str, value: Any) -> str:
    text = _str(key, value)
    try:
        parse_model_ref(text)
    except Exception as exc:
        raise ConfigError(f"{key}: {value!r} is not a model reference: {exc}") from None
    return text


def _optional_model_ref(key: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    return _model_ref(key, value)


def _list_of(item: Callable[[str, Any], Any]) -> Callable[[str, Any], tuple[Any, ...]]:
    def parse(key: str, value: Any) -> tuple[Any, ...]:
        if value is None:
            return ()
        if isinstance(value, str):
            # Env vars carry lists as comma-separated text.
            parts: list[Any] = [part.strip() for part in value.split(",") if part.strip()]
        elif isinstance(value, (list, tuple)):
            parts = list(value)
        else:
            raise ConfigError(f"{key}: {value!r} must be a list.")
        return tuple(item(f"{key}[{i}]", part) for i, part in enumerate(parts))

    return parse


def _path(key: str, value: Any) -> Path:
    return Path(_str(key, value)).expanduser()


def _paths(key: str, value: Any) -> tuple[Path, ...]:
    if isinstance(value, str):
        # Like PATH: os.pathsep-separated (commas accepted too).
        value = [p for chunk in value.split(os.pathsep) for p in chunk.split(",") if p.strip()]
    return _list_of(_path)(key, value)


def _mapping(key: str, value: Any) -> Mapping[str, Any]:
    if value is None:
        return {}
    if isinstance(value, str):  # from an env var: JSON or YAML text
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(f"{key}: {value!r} is not a JSON or YAML mapping.") from None
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}.")
    return dict(value)


# The settings a model may override (``serving.models.<name>``); version tags ``gateway.<key>`` may set
# all but the deadline. One parser per key, shared with the tag reader in gateway/serving/batch_settings.py.
BATCH_PARSERS: dict[str, Callable[[str, Any], Any]] = {
    "batching": _bool,
    "max_batch_rows": _int(1),
    "max_wait_ms": _float_non_negative,
    "max_queue_rows": _int(1),
    "max_queue_requests": _int(1),
    "request_timeout_s": _float_positive,
}


def _model_overrides(key: str, value: Any) -> Mapping[str, Mapping[str, Any]]:
    models = _mapping(key, value)
    result: dict[str, Mapping[str, Any]] = {}
    for name, overrides in models.items():
        if not isinstance(overrides, Mapping):
            raise ConfigError(f"{key}: model {name!r}: expected a mapping of settings, got {overrides!r}.")
        unknown = sorted(str(k) for k in overrides if k not in BATCH_PARSERS)
        if unknown:
            raise ConfigError(
                f"{key}: model {name!r}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(BATCH_PARSERS)}."
            )
        result[str(name)] = {
            setting: BATCH_PARSERS[setting](f"{key}: model {name!r}: {setting}", raw)
            for setting, raw in overrides.items()
        }
    return result


@dataclass(frozen=True, slots=True)
class Param:
    """One setting: dotted config-file key, parser, help text. Its env var is derived from the key."""

    key: str
    parse: Callable[[str, Any], Any]
    help: str

    @property
    def env_var(self) -> str:
        return ENV_PREFIX + self.key.replace(".", "_").upper()


PARAMS: tuple[Param, ...] = (
    Param(
        "store_uri",
        _store_uri,
        "Registry store: sqlite:///PATH (embedded) or postgresql+psycopg://... (shared).",
    ),
    Param("redis_url", _redis_url, "Redis for notifications and queues (optional)."),
    Param("host", _str, "Address to bind."),
    Param("port", _port, "Port to bind."),
    Param("workers", _int(1, 256), "uvicorn worker processes (default: number of cores)."),
    Param("log_level", _log_level, "critical, error, warning, info or debug."),
    Param("access_log", _bool, "Log one line per request (costs throughput)."),
    Param("artifact_roots", _paths, "Directories model packages may be loaded from (env: PATH-style list)."),
    Param("serving.default_model", _optional_model_ref, "Model served at POST /invocations."),
    Param("serving.preload", _list_of(_model_ref), "Models loaded at start; /health is 503 until they are."),
    Param("serving.max_loaded_versions", _int(1), "Most model versions kept loaded per worker (LRU unload)."),
    Param("serving.refresh_interval_s", _float_positive, "How often aliases are re-read from the store."),
    Param(
        "serving.intra_op_num_threads", _optional_int(1), "ONNX intra-op threads (auto: cores // workers)."
    ),
    Param("serving.max_body_bytes", _int(1), "Largest /invocations body accepted (413 beyond)."),
    Param(
        "serving.inline_max_us",
        _float_non_negative,
        "Models whose warm-up call takes at most this many microseconds run small requests on the event loop "
        "(0: always in the model's thread).",
    ),
    Param(
        "serving.batching",
        _bool,
        "Run concurrent requests to a model as one call (false: each request runs alone, queued FIFO).",
    ),
    Param("serving.max_batch_rows", _int(1), "Most rows in one model call; a larger request is split."),
    Param(
        "serving.max_wait_ms",
        _float_non_negative,
        "Once the model is free, wait up to this long for more rows while a batch is not full (0: never wait).",
    ),
    Param("serving.max_queue_rows", _int(1), "Rows queued per model version before 503 + Retry-After."),
    Param("serving.max_queue_requests", _int(1), "Requests queued per model version before 503 + Retry-After."),
    Param(
        "serving.request_timeout_s",
        _float_positive,
        "Request deadline (header X-Request-Timeout-Ms may shorten it): 504 if it passes before the model runs it.",
    ),
    Param(
        "serving.models",
        _model_overrides,
        "Per-model overrides {NAME: {batching, max_batch_rows, max_wait_ms, max_queue_rows, max_queue_requests, "
        "request_timeout_s}} (env: JSON or YAML text).",
    ),
    Param(
        "telemetry.summary_buffer",
        _int(1),
        "LLM call summaries held in memory for the trace-store writer; beyond it they are dropped (counted).",
    ),
    Param("telemetry.summary_batch", _int(1), "Most trace summaries written per insert."),
    Param("telemetry.summary_flush_interval_s", _float_positive, "How often a partial batch of summaries is written."),
    Param(
        "telemetry.shutdown_timeout_s",
        _float_non_negative,
        "At shutdown, how long span export and the summary writer may each take to flush.",
    ),
    Param("llm", _mapping, "LLM proxy routes (see docs/configuration.md)."),
    Param("auth", _mapping, "Gateway keys for /v1: {keys: [sha256 hex digests]} (see docs/configuration.md)."),
)
_PARAMS_BY_KEY = {param.key: param for param in PARAMS}
_SECTIONS = {"serving", "telemetry"}


def _flatten(data: Mapping[str, Any], source: str) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if key in _SECTIONS:
            if not isinstance(value, Mapping):
                raise ConfigError(f"{key} (in {source}): expected a mapping, got {type(value).__name__}.")
            for sub_key, sub_value in value.items():
                flat[f"{key}.{sub_key}"] = sub_value
        else:
            flat[str(key)] = value
    unknown = sorted(k for k in flat if k not in _PARAMS_BY_KEY)
    if unknown:
        raise ConfigError(
            f"Unknown configuration key(s) {', '.join(unknown)} in {source}; known keys: "
            f"{', '.join(p.key for p in PARAMS)}."
        )
    return flat


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"config file {str(path)!r} cannot be read: {exc.strerror or exc}.") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"config file {str(path)!r} must hold a mapping of keys, not {type(data).__name__}."
        )
    return _flatten(data, f"config file {path}")


def load_settings(
    cli: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    config_file: Path | str | None = None,
) -> Settings:
    """Build validated Settings. ``cli`` holds dotted keys whose value is not None (flags given)."""
    env = os.environ if environ is None else environ
    if config_file is None:
        config_file = env.get(GATEWAY_CONFIG) or None
    raw: dict[str, tuple[Any, str]] = {}
    if config_file:
        for key, value in read_config_file(Path(config_file)).items():
            raw[key] = (value, f"{key} (config file {config_file})")
    for param in PARAMS:
        if param.env_var in env:
            raw[param.key] = (env[param.env_var], f"{param.env_var} (environment)")
    for key, value in (cli or {}).items():
        if value is None:
            continue
        if key not in _PARAMS_BY_KEY:
            raise ConfigError(f"Unknown setting {key!r}.")
        raw[key] = (value, f"{key} (command line)")

    values: dict[str, Any] = {}
    for key, (value, where) in raw.items():
        values[key] = _PARAMS_BY_KEY[key].parse(where, value)

    serving_values = {k.split(".", 1)[1]: v for k, v in values.items() if k.startswith("serving.")}
    top_values = {k: v for k, v in values.items() if "." not in k}
    telemetry_values = {k.split(".", 1)[1]: v for k, v in values.items() if k.startswith("telemetry.")}
    top_values["telemetry"] = TelemetrySettings(**telemetry_values)
    serving = ServingSettings(**serving_values)
    if serving.default_model is None and serving.preload:
        serving = _replace(serving, default_model=serving.preload[0])
    if serving.default_model is not None and serving.default_model not in serving.preload:
        serving = _replace(serving, preload=(serving.default_model, *serving.preload))
    return Settings(serving=serving, **top_values)


def _replace(serving: ServingSettings, **changes: Any) -> ServingSettings:
    from dataclasses import replace

    return replace(serving, **changes)


def settings_to_dict(settings: Settings) -> dict[str, Any]:
    """Plain data for handing Settings to uvicorn worker processes (see ``settings_from_dict``)."""
    from dataclasses import asdict

    data = asdict(settings)
    data["artifact_roots"] = [str(p) for p in settings.artifact_roots]
    data["serving"]["preload"] = list(settings.serving.preload)
    data["llm"] = dict(settings.llm)
    data["auth"] = dict(settings.auth)
    return data


def settings_from_dict(data: Mapping[str, Any]) -> Settings:
    serving = dict(data["serving"])
    serving["preload"] = tuple(serving.get("preload") or ())
    top = {k: v for k, v in data.items() if k != "serving"}
    top["telemetry"] = TelemetrySettings(**data.get("telemetry", {}))
    top["artifact_roots"] = tuple(Path(p) for p in top.get("artifact_roots", ()))
    return Settings(serving=ServingSettings(**serving), **top)
