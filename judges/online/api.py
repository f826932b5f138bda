"""``GET /api/judges/online`` and ``PUT /api/judges/online``: the online rules in force, and replacing
them at runtime (routes: judges/routes.py, scope ``evaluations``).

A PUT body is ``{"rules": [...]}``, each rule as in ``judges.online`` (gateway/judge_online_settings.py),
checked by the same parser: a bad field is a 400 naming it (``rules[0].judges[1].rate``); a route that
does not capture content, an unknown judge, or one that cannot run (a built-in without ``judges.route``)
too. The new rules apply to calls that end from then on.

Scope: this process. Rules live in memory; with ``workers`` > 1 or several replicas each process keeps
its own, and a restart goes back to the configuration: put the rules in ``judges.online`` to keep them.
(Broadcasting a PUT to the other processes, over Redis as gateway/store/notify.py does for the registry,
is not done yet.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gateway.config_values import ConfigError
from gateway.errors import GatewayError, InvalidParameter
from gateway.http import ORJSONResponse, read_json_object
from gateway.judge_online_settings import CapturingRoute, OnlineRule, check_online_routes, parse_online_rules
from judges.api import JudgesState
from judges.online.service import OnlineJudging


@dataclass(eq=False)
class OnlineJudgesState:
    """``app.state.online_judges``: the running online judging (always: without rules it samples nothing) and
    the LLM routes a rule may name."""

    running: OnlineJudging
    routes: Mapping[str, CapturingRoute]


def _state(request: Request) -> OnlineJudgesState:
    state: OnlineJudgesState = request.app.state.online_judges
    return state


def _answer(state: OnlineJudgesState) -> Response:
    rules = state.running.rules.to_list()
    return ORJSONResponse({"rules": rules, "running": bool(rules), "buffered": len(state.running.buffer)})


async def get_online(request: Request) -> Response:
    """``GET /api/judges/online``: ``{rules, running, buffered}`` in this process."""
    if request.query_params:
        raise InvalidParameter(f"Unknown query parameter(s) {', '.join(sorted(set(request.query_params)))}.")
    return _answer(_state(request))


async def put_online(request: Request) -> Response:
    """``PUT /api/judges/online`` ``{"rules": [...]}``: replace the rules in this process (200 with them)."""
    state = _state(request)
    body = await read_json_object(request)
    rules = parse_rules_body(body, state.routes, request.app.state.judges)
    state.running.rules.replace(rules)
    return _answer(state)


def parse_rules_body(
    body: Mapping[str, Any], routes: Mapping[str, CapturingRoute], judges: JudgesState
) -> tuple[OnlineRule, ...]:
    """The rules of a PUT body; InvalidParameter naming the field otherwise."""
    unknown = sorted(set(body) - {"rules"})
    if unknown:
        raise InvalidParameter(f"Unknown field(s) {', '.join(unknown)}; expected 'rules'.")
    if "rules" not in body:
        raise InvalidParameter("Field 'rules' is required: a list of rules ([] turns online judging off).")
    try:
        rules = parse_online_rules("rules", body["rules"])
        check_online_routes("rules", rules, routes)
    except ConfigError as exc:
        raise InvalidParameter(str(exc)) from None
    for i, rule in enumerate(rules):
        for j, judge in enumerate(rule.judges):
            try:
                judges.catalog.runnable(judge.name, routes=judges.routes)
            except GatewayError as exc:
                raise InvalidParameter(f"rules[{i}].judges[{j}].name: {exc.message}") from None
    return rules
