"""``judges.online``: which live LLM calls are graded by which judges, at what sample rate, and the
bounds of the buffer that carries their jobs to the judge queue (judges/online/).

```yaml
judges:
  online:                           # rules; a call matching several runs the union of their judges
    - route: gpt-4o-mini            # the LLM route (required; it must capture content)
      prompt: support-answer        # only calls rendered from this prompt (optional)
      prompt_alias: production      # ... at the version this alias names now (or prompt_version: 3)
      operation: chat               # chat | text_completion (optional: both)
      judges:
        - {name: correctness, rate: 0.1}   # rate in [0, 1]: the share of matching traces it grades
        - {name: safety, rate: 1}
  online_buffer: 10000              # jobs waiting in memory for the queue; more are dropped (buffer_full)
  online_batch: 500                 # most jobs per enqueue
  online_flush_interval_s: 0.2      # the shipper sends what is buffered this often
  online_enqueue_timeout_s: 2       # one enqueue longer than this counts as the queue unavailable
```

The same rule parser reads ``PUT /api/judges/online`` bodies (judges/online/api.py), so a bad rule is
refused with the same message, naming the key (``judges.online[0].judges[1].rate``).
:func:`check_online_routes` is the one check across sections: every rule's route exists and captures
content (``llm.routes[].capture_content``), since a judge reads the captured call.

Imports nothing of ours but gateway/config_values.py (gateway/config.py imports it).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Final, Protocol

from gateway.config_values import ConfigError, integer, keys_of, number, positive, text

# The gen_ai.operation.name values a rule may name: the inference calls that have content to judge
# (the Responses and Messages APIs are "chat" too; embeddings have no answer to grade).
OPERATIONS: Final = ("chat", "text_completion")
# judges/definitions.py NAME_PATTERN (not imported: this module imports only config_values)
_JUDGE_NAME: Final = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,57}")
_RULE_KEYS: Final = ("route", "prompt", "prompt_version", "prompt_alias", "operation", "judges")
_JUDGE_KEYS: Final = ("name", "rate")
# The keys of the judges section this module reads (gateway/judge_settings.py lists them).
ONLINE_KEYS: Final = ("online", "online_buffer", "online_batch", "online_flush_interval_s", "online_enqueue_timeout_s")
_rate = number(minimum=0, inclusive=True)


@dataclass(frozen=True, slots=True)
class OnlineJudge:
    """One judge of a rule and the share of matching traces it grades."""

    name: str
    rate: float


@dataclass(frozen=True, slots=True)
class OnlineRule:
    """Which calls (``route``, and optionally ``prompt`` at ``prompt_version`` or ``prompt_alias``, and
    ``operation``) are graded by ``judges``."""

    route: str
    judges: tuple[OnlineJudge, ...]
    prompt: str | None = None
    prompt_version: int | None = None
    prompt_alias: str | None = None
    operation: str | None = None  # None: every operation of OPERATIONS

    def to_dict(self) -> dict[str, Any]:
        """The rule as written in config (unset keys left out): what ``GET /api/judges/online`` shows."""
        data: dict[str, Any] = {"route": self.route}
        for key in ("prompt", "prompt_version", "prompt_alias", "operation"):
            value = getattr(self, key)
            if value is not None:
                data[key] = value
        data["judges"] = [{"name": judge.name, "rate": judge.rate} for judge in self.judges]
        return data


@dataclass(frozen=True, slots=True)
class OnlineSettings:
    """``Settings.judges.online``: the rules and the bounds of the buffer in front of the judge queue."""

    rules: tuple[OnlineRule, ...] = ()
    buffer_size: int = 10_000
    batch_size: int = 500
    flush_interval_s: float = 0.2
    enqueue_timeout_s: float = 2.0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OnlineSettings:
        """The inverse of ``dataclasses.asdict`` (Settings handed to worker processes as JSON)."""
        rules = tuple(
            OnlineRule(**{**rule, "judges": tuple(OnlineJudge(**judge) for judge in rule["judges"])})
            for rule in data.get("rules", ())
        )
        return cls(**{**data, "rules": rules})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class CapturingRoute(Protocol):
    """What :func:`check_online_routes` reads of an LLM route (gateway/llm/routes_config.py ``Route``)."""

    @property
    def capture_content(self) -> bool: ...


def parse_online_settings(data: Mapping[str, Any]) -> OnlineSettings:
    """The ``online*`` keys of the judges section (already checked to be known keys)."""
    values: dict[str, Any] = {}
    if "online" in data:
        values["rules"] = parse_online_rules("judges.online", data["online"])
    if "online_buffer" in data:
        values["buffer_size"] = integer(1)("judges.online_buffer", data["online_buffer"])
    if "online_batch" in data:
        values["batch_size"] = integer(1)("judges.online_batch", data["online_batch"])
    if "online_flush_interval_s" in data:
        values["flush_interval_s"] = positive("judges.online_flush_interval_s", data["online_flush_interval_s"])
    if "online_enqueue_timeout_s" in data:
        values["enqueue_timeout_s"] = positive("judges.online_enqueue_timeout_s", data["online_enqueue_timeout_s"])
    return OnlineSettings(**values)


def parse_online_rules(key: str, value: Any) -> tuple[OnlineRule, ...]:
    """A list of rules (None: none); ConfigError naming ``key[i].<field>`` otherwise."""
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        raise ConfigError(f"{key}: expected a list of rules, got {type(value).__name__}.")
    return tuple(_rule(f"{key}[{i}]", raw) for i, raw in enumerate(value))


def check_online_routes(key: str, rules: tuple[OnlineRule, ...], routes: Mapping[str, CapturingRoute]) -> None:
    """Every rule's route is an LLM route that captures content; ConfigError naming the route otherwise."""
    for i, rule in enumerate(rules):
        route = routes.get(rule.route)
        if route is None:
            known = ", ".join(sorted(routes)) or "none"
            raise ConfigError(f"{key}[{i}].route: {rule.route!r} is not an LLM route (llm.routes: {known}).")
        if not route.capture_content:
            raise ConfigError(
                f"{key}[{i}].route: route {rule.route!r} has online judges but does not capture content; a judge "
                f"reads the captured call: set capture_content: true on that route (llm.routes) or llm.capture_content."
            )


def _rule(key: str, raw: Any) -> OnlineRule:
    data = keys_of(key, raw, _RULE_KEYS)
    if "route" not in data:
        raise ConfigError(f"{key}.route: missing; a rule names the LLM route whose calls it grades.")
    if "judges" not in data:
        raise ConfigError(f"{key}.judges: missing; a rule lists the judges that grade its calls.")
    prompt = text(f"{key}.prompt", data["prompt"]) if data.get("prompt") is not None else None
    version = integer(1)(f"{key}.prompt_version", data["prompt_version"]) if "prompt_version" in data else None
    alias = text(f"{key}.prompt_alias", data["prompt_alias"]) if "prompt_alias" in data else None
    if version is not None and alias is not None:
        raise ConfigError(f"{key}.prompt_alias: give prompt_version or prompt_alias, not both.")
    if (version is not None or alias is not None) and prompt is None:
        which = "prompt_version" if version is not None else "prompt_alias"
        raise ConfigError(f"{key}.{which}: needs prompt (the prompt's name).")
    operation = None
    if data.get("operation") is not None:
        operation = text(f"{key}.operation", data["operation"])
        if operation not in OPERATIONS:
            raise ConfigError(f"{key}.operation: {operation!r} is not one of {', '.join(OPERATIONS)}.")
    return OnlineRule(
        route=text(f"{key}.route", data["route"]),
        judges=_judges(f"{key}.judges", data["judges"]),
        prompt=prompt,
        prompt_version=version,
        prompt_alias=alias,
        operation=operation,
    )


def _judges(key: str, value: Any) -> tuple[OnlineJudge, ...]:
    if not isinstance(value, list | tuple) or not value:
        raise ConfigError(f"{key}: expected a non-empty list of {{name, rate}}.")
    judges: list[OnlineJudge] = []
    for i, raw in enumerate(value):
        data = keys_of(f"{key}[{i}]", raw, _JUDGE_KEYS)
        for field in _JUDGE_KEYS:
            if field not in data:
                raise ConfigError(f"{key}[{i}].{field}: missing; each judge is {{name, rate}}.")
        name = text(f"{key}[{i}].name", data["name"])
        if not _JUDGE_NAME.fullmatch(name):
            raise ConfigError(
                f"{key}[{i}].name: {name!r} is not a judge name (a letter, then up to 57 letters, digits, '_' or '-')."
            )
        if any(judge.name == name for judge in judges):
            raise ConfigError(f"{key}[{i}].name: {name!r} is listed twice in this rule.")
        rate = _rate(f"{key}[{i}].rate", data["rate"])
        if rate > 1:
            raise ConfigError(f"{key}[{i}].rate: {data['rate']!r} must be a number between 0 and 1.")
        judges.append(OnlineJudge(name, rate))
    return tuple(judges)
