"""Settings: one object, built once at start and passed down.

Precedence, highest first: CLI flag, ``GATEWAY_*`` environment variable, YAML config file
(``--config FILE`` or ``GATEWAY_CONFIG``), default. Every value is validated here; a bad one
raises ``ConfigError`` naming the key, where it came from and the value, and the server
refuses to start.

Every parameter is one ``Param`` line in ``PARAMS``: its dotted config-file key, its env var,
its parser and default. The CLI's ``--help`` and ``docs/configuration.md`` describe the same table.
The value parsers (integers, numbers and durations, booleans, lists, mappings) and ``ConfigError``
live in gateway/config_values.py, shared with the structured sections.

Structured sections (``llm``, ``auth``, ``judges``, ``limits``) have nested keys and lists: their ``Param`` reads
the whole section as a mapping (``GATEWAY_LLM`` holds JSON or YAML text), then their parser, listed in
``SECTIONS``, builds the typed value (``Settings.llm: LlmSettings``) in ``load_settings``, naming a bad
key by its path (``llm.routes[0].retries``). To add a section (keys, ...; gateway/judge_settings.py is a small example):

1. in a module under gateway/ that imports nothing of ours but gateway/config_values.py (as
   gateway/llm/routes_config.py does; gateway/config.py imports it), frozen dataclasses with defaults,
   ``parse_<name>_settings(raw)`` built on the shared value parsers (taking ``environ`` too when a
   default comes from it), and ``to_dict()`` / ``from_dict()`` for the JSON that hands Settings to
   uvicorn worker processes;
2. here: a field on ``Settings``, a ``Param("<name>", mapping, help)`` line and an entry in ``SECTIONS``;
3. a row in docs/configuration.md, and the section in the round-trip test of tests/test_config.py.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from gateway.config_values import ConfigError as ConfigError  # its home; re-exported for callers
from gateway.config_values import (
    boolean,
    integer,
    list_of,
    mapping,
    non_negative,
    optional_integer,
    optional_text,
    positive,
    text,
)
from gateway.json_depth import DEFAULT_MAX_JSON_DEPTH, MOST_JSON_DEPTH
from gateway.judge_online_settings import check_online_routes
from gateway.judge_settings import JudgesSettings, parse_judges_settings
from gateway.limit_settings import LimitsSettings, parse_limits_settings
from gateway.llm.routes_config import AuthSettings, LlmSettings, parse_auth_settings, parse_llm_settings
from gateway.refs import parse_model_ref
from gateway.registry_settings import RegistrySettings, build_registry_settings, registry_kind, tracking_uri

ENV_PREFIX = "GATEWAY_"
GATEWAY_CONFIG = "GATEWAY_CONFIG"
DEFAULT_STORE_URI = "sqlite:///./.gateway/store.db"
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


@dataclass(frozen=True, slots=True)
class ServingSettings:
    default_model: str | None = None
    preload: tuple[str, ...] = ()
    max_loaded_versions: int = 16
    refresh_interval_s: float = 2.0
    intra_op_num_threads: int | None = None
    max_body_bytes: int = 100 * 1024 * 1024
    max_rows: int = 100_000  # gateway.serving.limits
    parse_offload_bytes: int = 64 * 1024
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
class HttpSettings:
    """What one connection may do before its request is read (gateway.http_protocol): a slow or huge
    request head is refused instead of holding a connection, memory and a worker's attention."""

    header_timeout_s: float = 10.0  # from the connection (or a request's first byte) to its headers' end
    max_headers: int = 100
    max_header_bytes: int = 64 * 1024  # request line and headers
    keep_alive_s: float = 5.0  # an idle kept-alive connection is closed after this
    # What one request body may hold (gateway.http.read_json_object, gateway.json_depth): the admin, registry,
    # prompt, trace and key APIs take small JSON bodies; an evaluation run may carry its whole data set.
    max_json_body_bytes: int = 1024 * 1024
    max_evaluation_body_bytes: int = 16 * 1024 * 1024
    max_json_depth: int = DEFAULT_MAX_JSON_DEPTH  # every JSON body, /invocations and /v1 included


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
    http: HttpSettings = field(default_factory=HttpSettings)
    llm: LlmSettings = field(default_factory=LlmSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    judges: JudgesSettings = field(default_factory=JudgesSettings)
    limits: LimitsSettings = field(default_factory=LimitsSettings)
    registry: RegistrySettings = field(default_factory=RegistrySettings)

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


# --- parsers of this module's own values (the shared ones are in gateway/config_values.py) ---------


def _store_uri(key: str, value: Any) -> str:
    uri = text(key, value)
    scheme = uri.split(":", 1)[0].split("+", 1)[0].lower()
    if scheme not in {"sqlite", "postgresql", "postgres"} or "://" not in uri:
        raise ConfigError(
            f"{key}: {value!r} is not a supported store URI; expected sqlite:///PATH or "
            "postgresql+psycopg://USER@HOST/DB."
        )
    return uri


def _redis_url(key: str, value: Any) -> str | None:
    url = optional_text(key, value)
    if url is not None and not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"{key}: {value!r} is not a Redis URL (redis://HOST:PORT/DB).")
    return url


def _log_level(key: str, value: Any) -> str:
    level = text(key, value).lower()
    if level not in LOG_LEVELS:
        raise ConfigError(f"{key}: {value!r} is not a log level; expected one of {', '.join(LOG_LEVELS)}.")
    return level


def _model_ref(key: str, value: Any) -> str:
    value_text = text(key, value)
    try:
        parse_model_ref(value_text)
    except Exception as exc:
        raise ConfigError(f"{key}: {value!r} is not a model reference: {exc}") from None
    return value_text


def _optional_model_ref(key: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    return _model_ref(key, value)


def _path(key: str, value: Any) -> Path:
    return Path(text(key, value)).expanduser()


def _paths(key: str, value: Any) -> tuple[Path, ...]:
    if isinstance(value, str):
        # Like PATH: os.pathsep-separated (commas accepted too).
        value = [p for chunk in value.split(os.pathsep) for p in chunk.split(",") if p.strip()]
    return list_of(_path)(key, value)


# The settings a model may override (``serving.models.<name>``); version tags ``gateway.<key>`` may set
# all but the deadline. One parser per key, shared with the tag reader in gateway/serving/batch_settings.py.
BATCH_PARSERS: dict[str, Callable[[str, Any], Any]] = {
    "batching": boolean,
    "max_batch_rows": integer(1),
    "max_wait_ms": non_negative,
    "max_queue_rows": integer(1),
    "max_queue_requests": integer(1),
    "request_timeout_s": positive,
}


def _model_overrides(key: str, value: Any) -> Mapping[str, Mapping[str, Any]]:
    models = mapping(key, value)
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
    Param("host", text, "Address to bind."),
    Param("port", integer(0, 65535), "Port to bind."),
    Param("workers", integer(1, 256), "uvicorn worker processes (default: number of cores)."),
    Param("log_level", _log_level, "critical, error, warning, info or debug."),
    Param("access_log", boolean, "Log one line per request (costs throughput)."),
    Param("artifact_roots", _paths, "Directories model packages may be loaded from (env: PATH-style list)."),
    Param(
        "registry.kind",
        registry_kind,
        "Where served models and aliases come from: store (the gateway's own registry) or mlflow (an MLflow "
        "tracking server's registry, read in the background refresh).",
    ),
    Param(
        "registry.tracking_uri",
        tracking_uri,
        "The MLflow tracking server of registry.kind mlflow (default: MLFLOW_TRACKING_URI; "
        "MLFLOW_TRACKING_TOKEN is sent as a bearer token).",
    ),
    Param(
        "registry.cache_dir",
        _path,
        "Where packages downloaded from MLflow are kept, shared by the workers (default: mlflow-cache beside an "
        "SQLite store, else ./.gateway/mlflow-cache).",
    ),
    Param("serving.default_model", _optional_model_ref, "Model served at POST /invocations."),
    Param("serving.preload", list_of(_model_ref), "Models loaded at start; /health is 503 until they are."),
    Param("serving.max_loaded_versions", integer(1), "Most model versions kept loaded per worker (LRU unload)."),
    Param("serving.refresh_interval_s", positive, "How often aliases are re-read from the store."),
    Param("serving.intra_op_num_threads", optional_integer(1), "ONNX intra-op threads (auto: cores // workers)."),
    Param("serving.max_body_bytes", integer(1), "Largest /invocations body accepted (413 beyond)."),
    Param("serving.max_rows", integer(1), "Most rows one /invocations request may hold (413 beyond)."),
    Param(
        "serving.parse_offload_bytes",
        integer(0),
        "Bodies larger than this are parsed in a parser thread, off the event loop.",
    ),
    Param(
        "serving.inline_max_us",
        non_negative,
        "Models whose warm-up call takes at most this many microseconds run small requests on the event loop "
        "(0: always in the model's thread).",
    ),
    Param(
        "serving.batching",
        boolean,
        "Run concurrent requests to a model as one call (false: each request runs alone, queued FIFO).",
    ),
    Param("serving.max_batch_rows", integer(1), "Most rows in one model call; a larger request is split."),
    Param(
        "serving.max_wait_ms",
        non_negative,
        "Once the model is free, wait up to this long for more rows while a batch is not full (0: never wait).",
    ),
    Param("serving.max_queue_rows", integer(1), "Rows queued per model version before 503 + Retry-After."),
    Param("serving.max_queue_requests", integer(1), "Requests queued per model version before 503 + Retry-After."),
    Param(
        "serving.request_timeout_s",
        positive,
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
        integer(1),
        "LLM call summaries held in memory for the trace-store writer; beyond it they are dropped (counted).",
    ),
    Param("telemetry.summary_batch", integer(1), "Most trace summaries written per insert."),
    Param("telemetry.summary_flush_interval_s", positive, "How often a partial batch of summaries is written."),
    Param(
        "telemetry.shutdown_timeout_s",
        non_negative,
        "At shutdown, how long span export and the summary writer may each take to flush.",
    ),
    Param(
        "http.header_timeout_s",
        positive,
        "A request whose headers have not all arrived this long after the connection opened (or after the "
        "request's first byte) gets 408 and the connection closes.",
    ),
    Param("http.max_headers", integer(1), "Most headers one request may carry (431 beyond)."),
    Param("http.max_header_bytes", integer(1024), "Largest request line and headers, in bytes (431 beyond)."),
    Param("http.keep_alive_s", positive, "An idle kept-alive connection is closed after this many seconds."),
    Param(
        "http.max_json_body_bytes",
        integer(1),
        "Largest JSON body of the registry, prompt, MLflow, judge, trace and key APIs, in bytes (413 beyond).",
    ),
    Param(
        "http.max_evaluation_body_bytes",
        integer(1),
        "Largest body of POST /api/evaluations (its items inline), in bytes (413 beyond).",
    ),
    Param(
        "http.max_json_depth",
        integer(1, MOST_JSON_DEPTH),
        "Deepest nesting of arrays and objects in any JSON body, /invocations and /v1 included (400 beyond).",
    ),
    Param("llm", mapping, "LLM proxy routes (see docs/configuration.md)."),
    Param(
        "auth",
        mapping,
        "Gateway keys: {keys: [sha256 hex digests of bootstrap keys], open_routes, public_metrics, allow_open, "
        "refresh_interval_s} (see docs/configuration.md).",
    ),
    Param(
        "limits",
        mapping,
        "How key rate limits and budgets are counted: {reserve_tokens, redis_failure: open|closed, "
        "redis_timeout_s} (see docs/configuration.md).",
    ),
    Param(
        "judges",
        mapping,
        "LLM judges: {route, call_timeout_s, route_concurrency, concurrency, max_trace_items, workers, queue, online "
        "(rules of judges on live traffic), online_buffer, online_batch, online_flush_interval_s, "
        "online_enqueue_timeout_s, export (mlflow: assessments also logged to MLflow as feedback)} "
        "(see docs/configuration.md).",
    ),
)
_PARAMS_BY_KEY = {param.key: param for param in PARAMS}
# Groups of plain keys: ``serving: {max_batch_rows: 64}`` in the file is the key serving.max_batch_rows.
_GROUPS = {"serving", "telemetry", "http", "registry"}


@dataclass(frozen=True, slots=True)
class Section:
    """A structured section: ``parse`` builds its typed value from the mapping its ``Param`` read and the
    environment; ``from_dict`` reads back the value's ``to_dict()`` in a worker process."""

    parse: Callable[[Mapping[str, Any], Mapping[str, str]], Any]
    from_dict: Callable[[Mapping[str, Any]], Any]


SECTIONS: dict[str, Section] = {
    # The OTEL content-capture variable is llm.capture_content's default.
    "llm": Section(parse_llm_settings, LlmSettings.from_dict),
    "auth": Section(lambda raw, environ: parse_auth_settings(raw), AuthSettings.from_dict),
    "judges": Section(lambda raw, environ: parse_judges_settings(raw), JudgesSettings.from_dict),
    "limits": Section(lambda raw, environ: parse_limits_settings(raw), LimitsSettings.from_dict),
}


def _flatten(data: Mapping[str, Any], source: str) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if key in _GROUPS:
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
        content = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"config file {str(path)!r} cannot be read: {exc.strerror or exc}.") from None
    try:
        data = yaml.safe_load(content)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of keys, not {type(data).__name__}.")
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
    top_values["http"] = HttpSettings(**{k.split(".", 1)[1]: v for k, v in values.items() if k.startswith("http.")})
    for name, section in SECTIONS.items():  # after every plain value, so those are reported first
        top_values[name] = section.parse(values.get(name, {}), env)
    # Across sections: a route with online judges exists and captures content (a judge reads the call).
    check_online_routes("judges.online", top_values["judges"].online.rules, top_values["llm"].routes)
    registry_values = {k.split(".", 1)[1]: v for k, v in values.items() if k.startswith("registry.")}
    top_values["registry"] = build_registry_settings(
        registry_values, top_values.get("store_uri", DEFAULT_STORE_URI), env
    )
    serving = ServingSettings(**serving_values)
    if serving.default_model is None and serving.preload:
        serving = replace(serving, default_model=serving.preload[0])
    if serving.default_model is not None and serving.default_model not in serving.preload:
        serving = replace(serving, preload=(serving.default_model, *serving.preload))
    return Settings(serving=serving, **top_values)


def settings_to_dict(settings: Settings) -> dict[str, Any]:
    """Plain data (JSON) for handing Settings to uvicorn worker processes (see ``settings_from_dict``)."""
    data = asdict(settings)
    data["artifact_roots"] = [str(p) for p in settings.artifact_roots]
    data["serving"]["preload"] = list(settings.serving.preload)
    data["registry"] = settings.registry.to_dict()
    for name in SECTIONS:
        data[name] = getattr(settings, name).to_dict()
    return data


def settings_from_dict(data: Mapping[str, Any]) -> Settings:
    serving = dict(data["serving"])
    serving["preload"] = tuple(serving.get("preload") or ())
    top = {k: v for k, v in data.items() if k != "serving"}
    top["telemetry"] = TelemetrySettings(**data.get("telemetry", {}))
    top["http"] = HttpSettings(**data.get("http", {}))
    top["artifact_roots"] = tuple(Path(p) for p in top.get("artifact_roots", ()))
    top["registry"] = RegistrySettings.from_dict(data.get("registry", {}))
    for name, section in SECTIONS.items():
        top[name] = section.from_dict(data[name])
    return Settings(serving=ServingSettings(**serving), **top)
