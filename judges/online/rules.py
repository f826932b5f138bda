"""The online rules in force in this process, and which judges (at which rates) a finished call matches.

Built from ``judges.online`` at start and replaced whole by ``PUT /api/judges/online``: readers (the
span processor, on the thread that ends a span) take ``rules.current`` once and never see a half-made
set. Matching is a dict lookup by route first, so a call on a route without rules costs almost nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.judge_online_settings import OPERATIONS, OnlineRule
from gateway.telemetry import semconv as sc

# (prompt name, alias) -> the version the alias names now, or None: the prompt registry's cache, read in
# memory (gateway.app builds it over prompts/cache.py); None when no registry is at hand.
AliasResolver = Callable[[str, str], int | None]


@dataclass(frozen=True, slots=True)
class RuleSet:
    """A set of rules, indexed by route."""

    rules: tuple[OnlineRule, ...] = ()
    by_route: Mapping[str, tuple[OnlineRule, ...]] = field(default_factory=dict)

    @classmethod
    def of(cls, rules: tuple[OnlineRule, ...]) -> RuleSet:
        by_route: dict[str, list[OnlineRule]] = {}
        for rule in rules:
            by_route.setdefault(rule.route, []).append(rule)
        return cls(rules, {route: tuple(listed) for route, listed in by_route.items()})

    def rates_for(self, attributes: Mapping[str, Any], resolve_alias: AliasResolver | None) -> dict[str, float]:
        """The judges of every rule the call (its top span's ``attributes``) matches, each at the highest
        rate any of those rules gives it; empty when none matches."""
        rules = self.by_route.get(attributes.get(sc.GATEWAY_LLM_ROUTE))  # type: ignore[arg-type]
        if not rules:
            return {}
        rates: dict[str, float] = {}
        for rule in rules:
            if _matches(rule, attributes, resolve_alias):
                for judge in rule.judges:
                    if judge.rate > rates.get(judge.name, -1.0):
                        rates[judge.name] = judge.rate
        return rates


def _matches(rule: OnlineRule, attributes: Mapping[str, Any], resolve_alias: AliasResolver | None) -> bool:
    operation = attributes.get(sc.GEN_AI_OPERATION_NAME)
    if rule.operation is not None:
        if operation != rule.operation:
            return False
    elif operation not in OPERATIONS:
        return False
    if rule.prompt is None:
        return True
    if attributes.get(sc.GEN_AI_PROMPT_NAME) != rule.prompt:
        return False
    version = attributes.get(sc.GEN_AI_PROMPT_VERSION)
    if rule.prompt_version is not None:
        return bool(version == rule.prompt_version)
    if rule.prompt_alias is not None:
        if resolve_alias is None or version is None:
            return False
        return bool(resolve_alias(rule.prompt, rule.prompt_alias) == version)
    return True


class OnlineRules:
    """The rules in force in this process (``current``), replaced whole by :meth:`replace`."""

    def __init__(self, rules: tuple[OnlineRule, ...], resolve_alias: AliasResolver | None = None) -> None:
        self.current = RuleSet.of(rules)
        self.resolve_alias = resolve_alias

    def replace(self, rules: tuple[OnlineRule, ...]) -> None:
        self.current = RuleSet.of(rules)

    def rates_for(self, attributes: Mapping[str, Any]) -> dict[str, float]:
        return self.current.rates_for(attributes, self.resolve_alias)

    def to_list(self) -> list[dict[str, Any]]:
        return [rule.to_dict() for rule in self.current.rules]
