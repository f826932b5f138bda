"""Planning an evaluation run: a parsed request (judges/evaluation_request.py) checked against the gateway's
state and turned into what is stored and run, or, for ``dry_run``, into counts and an estimate.

What is checked here, each a 400 naming the field: the judges exist (each pinned to its current prompt
version, so a run resumed after a judge was edited still writes under the version it started with: the
assessment ids include it); the target's route is configured; its prompt reference names a version (pinned
too) whose variables every item's inputs provide; the trace ids are stored. A trace filter is capped at
``judges.max_trace_items`` or the request's smaller ``traces.limit``, and the answer names the cap.

Items from stored traces judge one LLM call each (a trace summary: its span is the judged span). Their
inputs and outputs are the call's captured content (the route's ``capture_content``): the last user
message's text when the call had one user message, else the messages; the answer's text. A call stored
without content becomes an item with empty inputs and no outputs, whose judges record an error naming the
missing field. Calls made by judges or by evaluation targets are never picked by a filter.

The counts: ``target_calls``, one per item without outputs when there is a target; ``judge_calls``, one per
(item, judge) that can be judged, without the repair requests an unusable answer adds (an item lacking a
field a judge needs gets its error assessment without a call; outputs a target will generate count as
present). The estimate is a rough guide for cost, never a bill: about 4 characters per token of each
request (the judge request exactly as the runner renders it, judges/request.py, with generated outputs
assumed as long as the expected answer; the rendered prompt of a target call), and for the answer
``JUDGE_OUTPUT_TOKENS`` per judge call and the prompt's ``max_tokens`` (else ``TARGET_OUTPUT_TOKENS``) per
target call, priced at each route's first target's prices when it has them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from gateway.error_text import json_type
from gateway.errors import BadRequest, GatewayError, InvalidParameter
from gateway.llm.routes_config import Route
from gateway.store.traces import TraceFilters, TraceStore
from gateway.telemetry import semconv as sc
from judges.catalog import JudgeCatalog, parse_guidelines
from judges.definitions import Judge, missing_field
from judges.evaluation_request import EvaluationRequest, JudgeSpec, TraceQuery
from judges.request import judge_request
from prompts.catalog import CachedVersion, Catalog
from prompts.refs import parse_prompt_ref

CHARS_PER_TOKEN: Final = 4
JUDGE_OUTPUT_TOKENS: Final = 80  # a short rationale and the result, as JSON
TARGET_OUTPUT_TOKENS: Final = 256
_TRACE_PAGE: Final = 500
_NOT_JUDGED: Final = (sc.GATEWAY_JUDGE_NAME, sc.GATEWAY_EVALUATION_ID)  # calls a filter never picks


def judge_to_dict(judge: Judge) -> dict[str, Any]:
    """A judge of a run as its stored request keeps it: enough to run the same version again."""
    data: dict[str, Any] = {"name": judge.name, "route": judge.route, "prompt_name": judge.prompt_name,
                            "prompt_version": judge.prompt_version}  # fmt: skip
    if judge.uses_guidelines:
        data["guidelines"] = list(judge.guidelines)
    return data


@dataclass(frozen=True, slots=True)
class JudgeResolver:
    """The judges a run names, from the judge catalog (the prompt registry in memory), ready to run."""

    catalog: JudgeCatalog
    routes: Collection[str]

    def resolve(self, spec: JudgeSpec, version: int | None, where: str) -> Judge:
        """The judge ``spec`` names, at its current version or at ``version`` (a resumed run); a 400
        naming ``where`` when there is no such judge or version, it has no usable route, or the
        guidelines do not fit it."""
        try:
            if version is None:
                return self.catalog.runnable(spec.name, guidelines=spec.guidelines, routes=self.routes, field=where)
            return self._pinned(spec, version, where)
        except GatewayError as exc:  # NotFound, JudgeUnusable, InvalidParameter
            message = exc.message if where in exc.message else f"{where}: {exc.message}"
            raise BadRequest(message) from None

    def _pinned(self, spec: JudgeSpec, version: int, where: str) -> Judge:
        judge = self.catalog.at_version(spec.name, version)
        if judge.code is not None:
            return judge
        if judge.route is None or judge.route not in self.routes:
            raise InvalidParameter(f"The judge {spec.name!r} version {version} has no LLM route of this gateway.")
        if judge.uses_guidelines:
            judge = judge.with_guidelines(parse_guidelines(spec.guidelines, f"{where}.guidelines"))
        return judge


@dataclass(frozen=True, slots=True)
class PlannedTarget:
    """Where missing outputs come from: ``route``, and the pinned prompt version when the request named one."""

    route: str
    prompt_ref: str | None = None  # as given: prompts:/qa@production
    prompt_name: str | None = None
    prompt_version: int | None = None

    @property
    def pinned_ref(self) -> str | None:
        return None if self.prompt_name is None else f"prompts:/{self.prompt_name}/{self.prompt_version}"

    def to_dict(self) -> dict[str, Any]:
        prompt = None
        if self.prompt_name is not None:
            prompt = {"ref": self.prompt_ref, "name": self.prompt_name, "version": self.prompt_version}
        return {"route": self.route, "prompt": prompt}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PlannedTarget:
        prompt = data.get("prompt") or {}
        return cls(data["route"], prompt.get("ref"), prompt.get("name"), prompt.get("version"))


@dataclass(slots=True)
class Plan:
    """A checked request: the normalized request that is stored, the items, and what running it takes."""

    request: dict[str, Any]
    items: list[dict[str, Any]]
    judges: list[Judge]
    target: PlannedTarget | None
    cap: dict[str, Any] | None = None
    estimate: dict[str, Any] = field(default_factory=dict)
    judge_calls: int = 0  # without repairs; an item lacking a field a judge needs makes no call

    @property
    def target_calls(self) -> int:
        return sum(1 for item in self.items if item.get("outputs") is None) if self.target is not None else 0

    def summary(self) -> dict[str, Any]:
        """What the 202 (and the dry run) answers besides the id."""
        data: dict[str, Any] = {"items": len(self.items), "judges": [j.name for j in self.judges],
                                "judge_calls": self.judge_calls, "target_calls": self.target_calls}  # fmt: skip
        if self.cap is not None:
            data["cap"] = self.cap
        return data


@dataclass(frozen=True, slots=True)
class Planner:
    """Everything a plan reads: the judges, the routes, the prompt registry (the worker's catalog), the
    trace store and the trace cap."""

    judges: JudgeResolver
    routes: Mapping[str, Route]
    catalog: Callable[[], Catalog]
    traces: TraceStore
    max_trace_items: int

    def plan(self, request: EvaluationRequest) -> Plan:
        """The run ``request`` asks for (blocking: it may read the trace store); BadRequest naming what is wrong."""
        judges = [self.judges.resolve(spec, None, f"judges[{i}]") for i, spec in enumerate(request.judges)]
        target, compiled = self._target(request)
        cap: dict[str, Any] | None = None
        if request.items is not None:
            items = [dict(item) for item in request.items]
        elif request.trace_ids is not None:
            items = self._traced(request.trace_ids)
        else:
            assert request.traces is not None
            items, cap = self._filtered(request.traces)
        if compiled is not None:
            _check_variables(items, compiled, target)
        normalized = {
            "name": request.name,
            "source": request.source,
            "judges": [judge_to_dict(judge) for judge in judges],
            "target": target.to_dict() if target is not None else None,
            "traces": request.traces.to_dict() if request.traces is not None else None,
            "trace_ids": list(request.trace_ids) if request.trace_ids is not None else None,
        }
        plan = Plan(normalized, items, judges, target, cap)
        plan.estimate = self.estimate(plan, compiled)
        normalized.update({key: value for key, value in plan.summary().items() if key != "judges"})
        return plan

    # -- the target ---------------------------------------------------------------------------------

    def _target(self, request: EvaluationRequest) -> tuple[PlannedTarget | None, CachedVersion | None]:
        spec = request.target
        if spec is None:
            return None, None
        self._check_route(spec.route, "target.route")
        if spec.prompt is None:
            return PlannedTarget(spec.route), None
        try:
            cached = self.catalog().resolve(parse_prompt_ref(spec.prompt))
        except GatewayError as exc:  # a malformed reference, or no such prompt, version or alias
            raise BadRequest(f"target.prompt {spec.prompt!r}: {exc.message}") from None
        version = cached.version
        return PlannedTarget(spec.route, spec.prompt, version.name, version.version), cached

    def _check_route(self, route: str, field: str) -> None:
        if route not in self.routes:
            known = ", ".join(sorted(self.routes)) or "none: configure the llm section"
            raise BadRequest(f"{field} {route!r} is not a configured LLM route (routes: {known}).")

    # -- items from stored traces -------------------------------------------------------------------

    def _traced(self, trace_ids: Sequence[str]) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        unknown: list[str] = []
        for trace_id in trace_ids:
            summaries = self.traces.get(trace_id)
            if not summaries:
                unknown.append(trace_id)
            items.extend(trace_item(summary) for summary in summaries)
        if unknown:
            shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
            raise BadRequest(f"trace_ids: no stored LLM call in trace(s) {shown}.")
        return items

    def _filtered(self, query: TraceQuery) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        limit = self.max_trace_items if query.limit is None else min(query.limit, self.max_trace_items)
        cap = {"limit": limit, "from": "traces.limit" if limit == query.limit else "judges.max_trace_items"}
        filters = TraceFilters(route=query.route, prompt_name=query.prompt_name, prompt_version=query.prompt_version,
                               start_ms=query.start_ms, end_ms=query.end_ms)  # fmt: skip
        items: list[dict[str, Any]] = []
        token: str | None = None
        more = False
        while True:
            page = self.traces.search(filters, min(_TRACE_PAGE, limit + 1), token)
            for summary in page.summaries:
                if any(name in summary["attributes"] for name in _NOT_JUDGED):
                    continue
                if len(items) == limit:
                    more = True
                    break
                items.append(trace_item(summary))
            token = page.next_page_token
            if more or token is None:
                break
        if not items:
            raise BadRequest(f"traces: no stored LLM call matches the filter {_shown_filter(query)}.")
        cap["matched_more"] = more  # calls past the cap were left out (newest first)
        return items, cap

    # -- the estimate -------------------------------------------------------------------------------

    def estimate(self, plan: Plan, compiled: CachedVersion | None) -> dict[str, Any]:
        by_route: dict[str, dict[str, Any]] = {}

        def add(route: str, calls: int, input_chars: int, output_tokens: int) -> None:
            entry = by_route.setdefault(route, {"calls": 0, "input_tokens": 0, "output_tokens": 0})
            entry["calls"] += calls
            entry["input_tokens"] += math.ceil(input_chars / CHARS_PER_TOKEN)
            entry["output_tokens"] += output_tokens

        generated = plan.target is not None and plan.target_calls > 0
        target_output = TARGET_OUTPUT_TOKENS
        if compiled is not None:
            max_tokens = (compiled.version.model_config or {}).get("max_tokens")
            if isinstance(max_tokens, int) and not isinstance(max_tokens, bool) and max_tokens > 0:
                target_output = max_tokens
        plan.judge_calls = 0
        for item in plan.items:
            judged = item
            if generated and item.get("outputs") is None:
                assert plan.target is not None
                add(plan.target.route, 1, _target_chars(item, compiled), target_output)
                judged = {**item, "outputs": "x" * (target_output * CHARS_PER_TOKEN)}  # as long as expected
            for judge in plan.judges:
                if judge.route is None or missing_field(judge, judged) is not None:
                    continue  # an error assessment, without a call
                body = judge_request(judge, judged, judge.route)
                chars = sum(len(m["content"]) for m in body["messages"]) + len(orjson.dumps(body["response_format"]))
                add(judge.route, 1, chars, JUDGE_OUTPUT_TOKENS)
                plan.judge_calls += 1
        total_cost: float | None = 0.0
        for route_name, entry in by_route.items():
            entry["cost_usd"] = _cost(self.routes[route_name], entry["input_tokens"], entry["output_tokens"])
            if entry["cost_usd"] is None:
                total_cost = None
            elif total_cost is not None:
                total_cost += entry["cost_usd"]
        return {
            "input_tokens": sum(e["input_tokens"] for e in by_route.values()),
            "output_tokens": sum(e["output_tokens"] for e in by_route.values()),
            "cost_usd": total_cost,
            "by_route": by_route,
            "method": f"~{CHARS_PER_TOKEN} characters per token of each request; {JUDGE_OUTPUT_TOKENS} output tokens "
            f"per judge call, the prompt's max_tokens (else {TARGET_OUTPUT_TOKENS}) per target call; prices of "
            "each route's first target (cost_usd null when a route has none)",
        }


def trace_item(summary: Mapping[str, Any]) -> dict[str, Any]:
    """An evaluation item judging one stored LLM call (a trace summary)."""
    inputs = _inputs_of(summary.get("input_content"))
    outputs = _outputs_of(summary.get("output_content"))
    return {
        "inputs": inputs if inputs is not None else {},
        "outputs": outputs,
        "expectations": None,
        "trace_id": summary["trace_id"],
        "span_id": summary["span_id"],
        "prompt_name": summary.get("prompt_name"),
        "prompt_version": summary.get("prompt_version"),
        "model": summary.get("response_model") or summary.get("request_model"),
    }


def _message_text(message: Any) -> str | None:
    """The text parts of a captured GenAI message (gateway/llm/content.py), joined."""
    if not isinstance(message, dict):
        return None
    parts = [p.get("content") for p in message.get("parts") or [] if isinstance(p, dict) and p.get("type") == "text"]
    texts = [part for part in parts if isinstance(part, str)]
    return "".join(texts) if texts else None


def _inputs_of(content: Any) -> Any:
    if not isinstance(content, list):
        return content if isinstance(content, str) and content else None  # a capture cut short: its text
    users = [message for message in content if isinstance(message, dict) and message.get("role") == "user"]
    if len(users) == 1 and _message_text(users[0]) is not None:
        return _message_text(users[0])
    messages = [{"role": m.get("role"), "content": _message_text(m)} for m in content if isinstance(m, dict)]
    return {"messages": messages} if messages else None


def _outputs_of(content: Any) -> Any:
    if isinstance(content, list):
        return _message_text(content[0]) if content else None
    return content if isinstance(content, str) and content else None


def target_messages(inputs: Any) -> list[dict[str, Any]]:
    """The chat messages a target without a prompt sends for an item: ``inputs`` itself when it is text, its
    ``messages`` when it has them, the text of an object's only value (``{"question": "..."}``), else the
    inputs as JSON in one user message."""
    if isinstance(inputs, str):
        return [{"role": "user", "content": inputs}]
    if isinstance(inputs, dict):
        messages = inputs.get("messages")
        if isinstance(messages, list) and messages:
            return list(messages)
        if len(inputs) == 1:
            (only,) = inputs.values()
            if isinstance(only, str):
                return [{"role": "user", "content": only}]
    return [{"role": "user", "content": orjson.dumps(inputs).decode()}]


def prompt_variables(inputs: Any) -> dict[str, Any] | None:
    """The prompt variables an item's inputs give: the inputs object itself (None when not an object)."""
    return dict(inputs) if isinstance(inputs, dict) else None


def _check_variables(items: Sequence[Mapping[str, Any]], cached: CachedVersion, target: PlannedTarget | None) -> None:
    needed = cached.compiled.variables
    for index, item in enumerate(items):
        if item.get("outputs") is not None:
            continue
        variables = prompt_variables(item.get("inputs"))
        if variables is None:
            raise BadRequest(
                f"items[{index}].inputs must be an object of the variables of {target and target.pinned_ref} "
                f"({', '.join(needed) or 'none'}), got {json_type(item.get('inputs'))}."
            )
        missing = [name for name in needed if name not in variables]
        if missing:
            raise BadRequest(
                f"items[{index}].inputs lacks the variable(s) {', '.join(map(repr, missing))} of "
                f"{target and target.pinned_ref} (it uses {', '.join(map(repr, needed))})."
            )


def _target_chars(item: Mapping[str, Any], compiled: CachedVersion | None) -> int:
    inputs = item.get("inputs")
    if compiled is None:
        return sum(len(str(m.get("content", ""))) for m in target_messages(inputs))
    variables = prompt_variables(inputs) or {}
    return sum(len(m["content"]) for m in compiled.compiled.render_messages(variables))


def _json_chars(value: Any) -> int:
    if value is None:
        return 0
    return len(value) if isinstance(value, str) else len(orjson.dumps(value))


def _cost(route: Route, input_tokens: int, output_tokens: int) -> float | None:
    return route.targets[0].cost_usd(input_tokens, output_tokens) if route.targets else None


def _shown_filter(query: TraceQuery) -> str:
    given = {k: v for k, v in query.to_dict().items() if v is not None and k != "limit"}
    return orjson.dumps(given).decode() if given else "(every stored call)"
