"""The ``llm`` and ``auth`` config sections, validated into frozen value objects at start.

``load_settings`` (gateway/config.py) reads each section as a mapping (from YAML, the command line
or the JSON env vars ``GATEWAY_LLM`` / ``GATEWAY_AUTH``) and builds ``Settings.llm`` and
``Settings.auth`` with :func:`parse_llm_settings` and :func:`parse_auth_settings`, which check every
key with the value parsers of gateway/config_values.py and raise ``ConfigError`` naming the key path,
e.g. ``llm.routes[0].targets[1].base_url``, so a bad route stops the server before it binds.
This module imports nothing of ours but config_values and semconv, so gateway/config.py can import it.

Example (the keys of design.md plus ours; every route key but ``name`` and ``targets`` is optional)::

    llm:
      capture_content: false        # default: OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT
      capture_max_chars: 8192
      routes:
        - name: gpt-4o-mini         # what clients send as "model"
          timeout_s: 60             # total, retries included, until the answer (or a stream's first chunk)
          connect_timeout_s: 5
          read_timeout_s: 60        # longest silence between two bytes of one answer
          retries: 2                # per target, on 429, 5xx and connection errors
          backoff_initial_s: 0.25
          backoff_max_s: 8
          rpm: 3000                 # the route's own limits, whoever calls (per key: `gateway keys create`);
          tpm: 1000000              # exact across replicas with Redis, per worker without
          targets:
            - base_url: https://api.openai.com/v1
              model: gpt-4o-mini
              api_key_env: OPENAI_API_KEY
              provider: openai      # gen_ai.provider.name
              weight: 3             # any weight given: the first target is drawn by weight
              input_price_per_mtok: 0.15    # USD per million tokens, both or neither: the call's
              output_price_per_mtok: 0.6    # gateway.usage.cost_usd (spans, trace store, judges)
        - name: claude                # provider anthropic: the route serves POST /v1/messages
          provider: anthropic
          targets:
            - base_url: https://api.anthropic.com/v1
              model: claude-sonnet-4-5
              api_key_env: ANTHROPIC_API_KEY   # sent as x-api-key
              anthropic_version: "2023-06-01"  # the anthropic-version header (this is the default)
    auth:
      keys: [<sha256 hex of a gateway key>, ...]   # set: every route but /ping, /health, /version needs a key
      open_routes: [invoke]         # scopes left open on purpose (default: none)
      public_metrics: true          # /metrics without a key (default)
      refresh_interval_s: 2         # each worker re-reads the stored keys (gateway keys create) this often
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

from gateway.config_values import (
    ConfigError,
    boolean,
    integer,
    keys_of,
    list_of,
    non_negative,
    positive,
    text,
)
from gateway.telemetry.semconv import (
    OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT,
    PROVIDER_ANTHROPIC,
    PROVIDER_OPENAI,
)

logger = logging.getLogger("gateway.llm")

DEFAULT_TIMEOUT_S = 300.0
DEFAULT_CONNECT_TIMEOUT_S = 5.0
DEFAULT_RETRIES = 2
DEFAULT_BACKOFF_INITIAL_S = 0.25
DEFAULT_BACKOFF_MAX_S = 8.0
DEFAULT_CAPTURE_MAX_CHARS = 8192
DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024
DEFAULT_ANTHROPIC_VERSION = "2023-06-01"
# The wire API a route's targets speak: OpenAI's (chat completions, completions, embeddings, responses), or
# Anthropic's Messages API (provider anthropic). Every target of a route speaks the same one.
API_OPENAI = "openai"
API_ANTHROPIC = "anthropic"

_LLM_KEYS = ("routes", "capture_content", "capture_max_chars", "max_body_bytes")
_ROUTE_KEYS = (
    "name",
    "targets",
    "timeout_s",
    "connect_timeout_s",
    "read_timeout_s",
    "retries",
    "backoff_initial_s",
    "backoff_max_s",
    "provider",
    "capture_content",
    "capture_max_chars",
    "rpm",
    "tpm",
)
_TARGET_KEYS = (
    "base_url",
    "model",
    "api_key_env",
    "weight",
    "provider",
    "input_price_per_mtok",
    "output_price_per_mtok",
    "anthropic_version",
)
_AUTH_KEYS = ("keys", "open_routes", "public_metrics", "allow_open", "refresh_interval_s")
DEFAULT_KEY_REFRESH_INTERVAL_S = 2.0
# Every key scope a route of the table may require (gateway/api/routes.py; tests/api/test_access.py keeps
# the two in step): what a key may be granted, and what auth.open_routes may leave open.
SCOPES = (
    "invoke", "llm", "registry:read", "registry:write", "prompts:read", "prompts:write", "traces:read",
    "evaluations", "admin", "metrics",
)  # fmt: skip
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PROVIDER_NAME = re.compile(r"^[a-z0-9_.]+$")
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
_LOOPBACK_HOSTS = {"127.0.0.1", "::1", "localhost"}
_CAPTURE_ON = {"1", "true", "yes", "on", "span_only", "span_and_event"}


@dataclass(frozen=True, slots=True)
class Target:
    """One OpenAI-compatible upstream for a route: where, which model, whose key."""

    base_url: str  # without a trailing slash, e.g. https://api.openai.com/v1
    model: str
    api_key_env: str | None
    weight: float | None
    provider: str
    host: str
    port: int
    input_price_per_mtok: float | None = None  # USD per million tokens; both prices or neither
    output_price_per_mtok: float | None = None
    anthropic_version: str | None = None  # the anthropic-version header of a provider anthropic target

    @property
    def api(self) -> str:
        """The wire API this target speaks: ``anthropic`` for provider anthropic, else ``openai``."""
        return API_ANTHROPIC if self.provider == PROVIDER_ANTHROPIC else API_OPENAI

    @property
    def label(self) -> str:
        """``"<base_url> <model>"``: how spans, logs and the store name this target."""
        return f"{self.base_url} {self.model}"

    def cost_usd(self, input_tokens: int | None, output_tokens: int | None) -> float | None:
        """What a call with this usage cost at this target's prices; None without prices or usage."""
        input_price, output_price = self.input_price_per_mtok, self.output_price_per_mtok
        if input_price is None or output_price is None or (input_tokens is None and output_tokens is None):
            return None
        return ((input_tokens or 0) * input_price + (output_tokens or 0) * output_price) / 1_000_000


@dataclass(frozen=True, slots=True)
class Route:
    """A model name clients ask for, with its targets (tried in order) and its timeouts and retries."""

    name: str
    targets: tuple[Target, ...]
    timeout_s: float
    connect_timeout_s: float
    read_timeout_s: float
    retries: int
    backoff_initial_s: float
    backoff_max_s: float
    capture_content: bool
    capture_max_chars: int
    rpm: int | None = None  # the route's requests per minute, every caller together (gateway/limits/)
    tpm: int | None = None  # ... and tokens per minute

    @property
    def limited(self) -> bool:
        """The route has limits of its own (checked for every call, with or without a key)."""
        return bool(self.rpm or self.tpm)

    @property
    def weighted(self) -> bool:
        return any(t.weight is not None for t in self.targets)

    @property
    def api(self) -> str:
        """The wire API of the route's targets (all the same: checked when the config is read)."""
        return self.targets[0].api


@dataclass(frozen=True, slots=True)
class LlmSettings:
    """``Settings.llm``: the routes by name, and the largest /v1 request body."""

    routes: Mapping[str, Route] = field(default_factory=dict)
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON) for worker processes; :meth:`from_dict` reads it back."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LlmSettings:
        routes = {
            name: Route(**{**route, "targets": tuple(Target(**target) for target in route["targets"])})
            for name, route in data["routes"].items()
        }
        return cls(routes=routes, max_body_bytes=data["max_body_bytes"])


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """``Settings.auth``: the sha256 hex digests of the bootstrap keys (none: auth is off, every route is open), the
    scopes left open to requests without a key (``open_routes``, e.g. ``invoke``), whether ``/metrics`` is one of
    them (``public_metrics``, true by default: Prometheus scrapes without a key), and how often each worker
    re-reads the keys of the store (``refresh_interval_s``; at once on a Redis notification)."""

    key_hashes: frozenset[str] = frozenset()
    open_routes: frozenset[str] = frozenset()
    public_metrics: bool = True
    allow_open: bool = False  # serve beyond loopback with no keys, on purpose (else gateway serve refuses)
    refresh_interval_s: float = DEFAULT_KEY_REFRESH_INTERVAL_S  # how often each worker re-reads the stored keys

    @property
    def open_scopes(self) -> frozenset[str]:
        """The scopes a request needs no key for."""
        return self.open_routes | {"metrics"} if self.public_metrics else self.open_routes

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON) for worker processes; :meth:`from_dict` reads it back."""
        return {
            "key_hashes": sorted(self.key_hashes),
            "open_routes": sorted(self.open_routes),
            "public_metrics": self.public_metrics,
            "allow_open": self.allow_open,
            "refresh_interval_s": self.refresh_interval_s,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AuthSettings:
        return cls(
            key_hashes=frozenset(data["key_hashes"]),
            open_routes=frozenset(data.get("open_routes", ())),
            public_metrics=data.get("public_metrics", True),
            allow_open=data.get("allow_open", False),
            refresh_interval_s=data.get("refresh_interval_s", DEFAULT_KEY_REFRESH_INTERVAL_S),
        )


_RETRIES = integer(0)
_AT_LEAST_ONE = integer(1)


# --- values only this section has --------------------------------------------------------------------


def _provider(key: str, value: Any) -> str:
    name = text(key, value)
    if not _PROVIDER_NAME.match(name):
        raise ConfigError(
            f"{key}: {value!r} is not a gen_ai.provider.name (lower case, e.g. openai, azure.ai.openai, groq)."
        )
    return name


def _base_url(key: str, value: Any) -> tuple[str, str, int]:
    url = text(key, value).rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ConfigError(f"{key}: {value!r} is not an http(s) URL such as https://api.openai.com/v1.")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ConfigError(
            f"{key}: {value!r} must not carry credentials, a query or a fragment (keys go in api_key_env)."
        )
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ConfigError(f"{key}: {value!r} has an invalid port.") from None
    return url, parts.hostname, port


# --- sections ---------------------------------------------------------------------------------------


def capture_from_environ(environ: Mapping[str, str]) -> bool:
    """``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``: true/false, or the contrib enum
    (SPAN_ONLY and SPAN_AND_EVENT put content on spans; NO_CONTENT and EVENT_ONLY do not)."""
    return environ.get(OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT, "").strip().lower() in _CAPTURE_ON


def _price(key: str, value: Any) -> float:
    price = non_negative(key, value)
    if not math.isfinite(price):
        raise ConfigError(f"{key}: {value!r} is not a price (USD per million tokens, e.g. 0.15).")
    return price


def _prices(key: str, data: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """``input_price_per_mtok`` and ``output_price_per_mtok``: both or neither."""
    given = [name for name in ("input_price_per_mtok", "output_price_per_mtok") if data.get(name) is not None]
    if not given:
        return None, None
    if len(given) == 1:
        other = "output_price_per_mtok" if given[0] == "input_price_per_mtok" else "input_price_per_mtok"
        raise ConfigError(
            f"{key}.{other}: required with {given[0]} (give both prices, in USD per million tokens, or neither)."
        )
    return (
        _price(f"{key}.input_price_per_mtok", data["input_price_per_mtok"]),
        _price(f"{key}.output_price_per_mtok", data["output_price_per_mtok"]),
    )


def _target(key: str, raw: Any, route_provider: str) -> Target:
    data = keys_of(key, raw, _TARGET_KEYS)
    if "base_url" not in data:
        raise ConfigError(f"{key}.base_url: required (an OpenAI-compatible URL such as https://api.openai.com/v1).")
    if "model" not in data:
        raise ConfigError(f"{key}.model: required (the model name the upstream knows).")
    base_url, host, port = _base_url(f"{key}.base_url", data["base_url"])
    api_key_env = None
    if data.get("api_key_env") not in (None, ""):
        api_key_env = text(f"{key}.api_key_env", data["api_key_env"])
        if not _ENV_NAME.match(api_key_env):
            raise ConfigError(
                f"{key}.api_key_env: {api_key_env!r} is not an environment variable name "
                "(it names the variable holding the key, never the key itself)."
            )
    weight = None
    if data.get("weight") is not None:
        weight = non_negative(f"{key}.weight", data["weight"])
    provider = _provider(f"{key}.provider", data["provider"]) if "provider" in data else route_provider
    input_price, output_price = _prices(key, data)
    anthropic_version = None
    if provider == PROVIDER_ANTHROPIC:
        anthropic_version = text(f"{key}.anthropic_version", data.get("anthropic_version", DEFAULT_ANTHROPIC_VERSION))
    elif "anthropic_version" in data:
        raise ConfigError(
            f"{key}.anthropic_version: only for a target with provider: anthropic (this one's is {provider!r})."
        )
    return Target(
        base_url=base_url,
        model=text(f"{key}.model", data["model"]),
        api_key_env=api_key_env,
        weight=weight,
        provider=provider,
        host=host,
        port=port,
        input_price_per_mtok=input_price,
        output_price_per_mtok=output_price,
        anthropic_version=anthropic_version,
    )


def _route(key: str, raw: Any, capture_default: bool, capture_max_default: int) -> Route:
    data = keys_of(key, raw, _ROUTE_KEYS)
    if "name" not in data:
        raise ConfigError(f"{key}.name: required (the model name clients ask for).")
    name = text(f"{key}.name", data["name"])
    route_provider = _provider(f"{key}.provider", data["provider"]) if "provider" in data else PROVIDER_OPENAI
    raw_targets = data.get("targets")
    if not isinstance(raw_targets, list) or not raw_targets:
        raise ConfigError(f"{key}.targets: expected a non-empty list of targets, got {raw_targets!r}.")
    targets = tuple(_target(f"{key}.targets[{i}]", t, route_provider) for i, t in enumerate(raw_targets))
    if any(t.weight is not None for t in targets) and not any(t.weight for t in targets):
        raise ConfigError(f"{key}.targets: at least one weight must be > 0.")
    apis = {t.api for t in targets}
    if len(apis) > 1:
        raise ConfigError(
            f"{key}.targets: mixes provider anthropic (the Anthropic Messages API) with OpenAI-compatible targets; "
            "a route's targets must all speak one API, since a fallback gets the same request body."
        )
    timeout_s = positive(f"{key}.timeout_s", data.get("timeout_s", DEFAULT_TIMEOUT_S))
    connect_default = min(DEFAULT_CONNECT_TIMEOUT_S, timeout_s)
    backoff_initial_s = non_negative(
        f"{key}.backoff_initial_s", data.get("backoff_initial_s", DEFAULT_BACKOFF_INITIAL_S)
    )
    backoff_max_s = non_negative(f"{key}.backoff_max_s", data.get("backoff_max_s", DEFAULT_BACKOFF_MAX_S))
    if backoff_max_s < backoff_initial_s:
        raise ConfigError(f"{key}.backoff_max_s: {backoff_max_s:g} is below backoff_initial_s ({backoff_initial_s:g}).")
    return Route(
        name=name,
        targets=targets,
        timeout_s=timeout_s,
        connect_timeout_s=positive(f"{key}.connect_timeout_s", data.get("connect_timeout_s", connect_default)),
        read_timeout_s=positive(f"{key}.read_timeout_s", data.get("read_timeout_s", timeout_s)),
        retries=_RETRIES(f"{key}.retries", data.get("retries", DEFAULT_RETRIES)),
        backoff_initial_s=backoff_initial_s,
        backoff_max_s=backoff_max_s,
        capture_content=boolean(f"{key}.capture_content", data["capture_content"])
        if "capture_content" in data
        else capture_default,
        capture_max_chars=_AT_LEAST_ONE(f"{key}.capture_max_chars", data["capture_max_chars"])
        if "capture_max_chars" in data
        else capture_max_default,
        rpm=_AT_LEAST_ONE(f"{key}.rpm", data["rpm"]) if data.get("rpm") is not None else None,
        tpm=_AT_LEAST_ONE(f"{key}.tpm", data["tpm"]) if data.get("tpm") is not None else None,
    )


def parse_llm_settings(raw: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> LlmSettings:
    """The ``llm`` section as :class:`LlmSettings`; ConfigError naming the key otherwise."""
    env = os.environ if environ is None else environ
    data = keys_of("llm", raw or {}, _LLM_KEYS)
    capture = boolean("llm.capture_content", data["capture_content"]) if "capture_content" in data else None
    if capture is None:
        capture = capture_from_environ(env)
    capture_max = _AT_LEAST_ONE("llm.capture_max_chars", data.get("capture_max_chars", DEFAULT_CAPTURE_MAX_CHARS))
    raw_routes = data.get("routes") or []
    if not isinstance(raw_routes, list):
        raise ConfigError(f"llm.routes: expected a list of routes, got {type(raw_routes).__name__}.")
    routes: dict[str, Route] = {}
    for i, raw_route in enumerate(raw_routes):
        route = _route(f"llm.routes[{i}]", raw_route, capture, capture_max)
        if route.name in routes:
            raise ConfigError(f"llm.routes[{i}].name: {route.name!r} is already the name of another route.")
        routes[route.name] = route
    max_body_bytes = _AT_LEAST_ONE("llm.max_body_bytes", data.get("max_body_bytes", DEFAULT_MAX_BODY_BYTES))
    return LlmSettings(routes=routes, max_body_bytes=max_body_bytes)


def _key_digest(key: str, value: Any) -> str:
    digest = text(key, value).lower()
    if not _SHA256_HEX.match(digest):
        raise ConfigError(
            f"{key}: expected the sha256 hex digest of a key (64 hex characters), not the key "
            f'itself; make one with: printf %s "$KEY" | sha256sum'
        )
    return digest


def parse_auth_settings(raw: Mapping[str, Any]) -> AuthSettings:
    """The ``auth`` section: ``keys`` is a list of sha256 hex digests of the gateway keys, ``open_routes`` a
    list of scopes requests without a key may use, ``public_metrics`` whether /metrics is one of them."""
    data = keys_of("auth", raw or {}, _AUTH_KEYS)
    keys = data.get("keys") or []
    if not isinstance(keys, list | str):  # text: GATEWAY_AUTH='{"keys": "a,b"}' style
        raise ConfigError(f"auth.keys: expected a list of sha256 hex digests, got {type(keys).__name__}.")
    return AuthSettings(
        key_hashes=frozenset(list_of(_key_digest)("auth.keys", keys)),
        open_routes=frozenset(list_of(_scope)("auth.open_routes", data.get("open_routes") or [])),
        public_metrics=boolean("auth.public_metrics", data.get("public_metrics", True)),
        allow_open=boolean("auth.allow_open", data.get("allow_open", False)),
        refresh_interval_s=positive(
            "auth.refresh_interval_s", data.get("refresh_interval_s", DEFAULT_KEY_REFRESH_INTERVAL_S)
        ),
    )


def _scope(key: str, value: Any) -> str:
    scope = text(key, value)
    if scope not in SCOPES:
        raise ConfigError(f"{key}: {scope!r} is not a key scope; the scopes are: {', '.join(SCOPES)}.")
    return scope


def refuse_open_by_accident(auth: AuthSettings, host: str) -> None:
    """``gateway serve`` beyond loopback with no gateway keys would let anyone who reaches the port register
    models, move aliases, rewrite prompts and read captured traces: a ConfigError naming the two ways out,
    unless ``auth.allow_open`` says it is on purpose."""
    if auth.key_hashes or host in _LOOPBACK_HOSTS or auth.allow_open:
        return
    raise ConfigError(
        f"host {host!r} is beyond loopback and auth.keys is empty: every endpoint would be open to anyone who "
        'can reach it. Set auth.keys (sha256 hex digests of gateway keys: printf %s "$KEY" | sha256sum), '
        "or set auth.allow_open: true to serve it open on purpose (GATEWAY_AUTH='{\"allow_open\": true}')."
    )


def warn_about_risky_settings(
    llm: LlmSettings, auth: AuthSettings, *, host: str, port: int, environ: Mapping[str, str] | None = None
) -> None:
    """Warn once at start (``gateway serve``) about what is allowed but risky: an open gateway bound
    beyond loopback, a provider key variable that is unset. (Bad values never get here: load_settings
    refuses them.)"""
    env = os.environ if environ is None else environ
    if not auth.key_hashes and host not in _LOOPBACK_HOSTS:  # allowed: refuse_open_by_accident passed
        logger.warning(
            "auth.allow_open is set and auth.keys is empty: every endpoint (LLM calls, registry and prompt "
            "writes, traces) is open to anyone who can reach %s:%d",
            host,
            port,
        )
    for route in llm.routes.values():
        for target in route.targets:
            if target.api_key_env and not env.get(target.api_key_env):
                logger.warning(
                    "Route %r target %s: environment variable %s is not set; calls go without a provider key",
                    route.name,
                    target.label,
                    target.api_key_env,
                )
