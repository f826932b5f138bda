"""JudgeRunner: one judge on one item, start to stored assessment.

``await runner.run(judge, item, target=..., evaluation_id=...)``:

1. the assessment's id is deterministic (``assessment_id``: the target, the judge's name and prompt
   version, the evaluation id or "online"); when the store already holds it, it is returned as is, with
   no call and no write: a retried job (after a crash, a redelivery) never calls or writes twice;
2. an item lacking a field the judge needs gets an error assessment naming it (``missing_field``);
   a code judge (judges/code.py) runs its function here, in process, and goes to step 5 (source ``CODE``;
   an exception in it is an error assessment ``code_error`` naming it);
3. the judge request (judges/request.py) goes through ``LlmProxy.complete``: our own route, retries,
   fallback, spans and metrics, no HTTP call to ourselves; the call is a trace of its own with a span
   link to the judged span and the ``gateway.judge.*`` attributes;
4. the answer is read tolerantly (judges/parsing.py); an answer that cannot be used gets one repair
   request saying what was wrong, and when that fails too, an error assessment with the problem's code;
5. the assessment is written if absent (off the event loop), then, when this run wrote it, the
   ``gen_ai.evaluation.result`` event is emitted, the metrics (judges/metrics.py) counted, and, with
   ``judges.export.mlflow``, the assessment queued for MLflow as feedback (judges/mlflow_feedback.py).

The store round trips of steps 1 and 5 are coalesced (judges/batching.py): the runs that look up (or write)
in the same turn of the event loop share one query (one transaction), so the jobs of one worker claim, or
the items of an evaluation run, cost a few round trips between them instead of a few each.

Bounds, so that a hung upstream cannot stall everything else: at most ``judges.route_concurrency`` judge
calls in flight per LLM route (an ``asyncio.Semaphore`` per route, in this process), and each call
bounded by ``judges.call_timeout_s`` (the proxy's own deadline for the whole call, retries included,
with an outer ``asyncio.timeout`` as a backstop): a slot is held at most that long, and the call ends
as an error assessment with ``error_code`` ``timeout``.

``run`` never raises for what a judge or an upstream does: every such outcome is an assessment. What it
does raise is the store failing (the job should then be retried, and step 1 makes that safe) and
cancellation.

The queue's workers (judges/worker.py) call ``judge_once(..., raise_failures=True)`` instead: the same
steps, but a failure that another try may not have (``rate_limited``, ``upstream_error``, ``timeout``:
429, 5xx, connection errors) raises :class:`JudgeCallDeferred` (with the upstream's ``Retry-After``),
and one the judge's configuration causes (``no_route``, ``unknown_route``, the route's upstream answering
401, 403 or 404) raises :class:`JudgeMisconfigured`, with nothing written: the worker retries the job or
pauses the judge. Its :class:`RunResult` also says whether the judge was called and who wrote the row
(a ``duplicate``: this run called the judge, and found the row written by another run of the same job).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Mapping
from typing import Any, Final

from gateway.errors import InvalidParameter
from gateway.judge_settings import JudgesSettings
from gateway.llm.completion import Completion
from gateway.llm.errors import ProxyError
from gateway.llm.proxy import LlmProxy
from gateway.store.assessments import (
    CODE,
    LLM_JUDGE,
    Assessment,
    AssessmentStore,
    assessment_id,
    item_target,
    score_and_label,
    trace_target,
)
from gateway.telemetry import semconv as sc
from gateway.telemetry.events import EvaluationEvents
from judges import metrics
from judges.batching import Coalescer
from judges.code import CodeJudgeFailed, run_code
from judges.definitions import Judge, missing_field
from judges.mlflow_feedback import MlflowFeedbackExporter
from judges.parsing import ParseProblem, Verdict, parse_verdict
from judges.request import judge_request, repair_request

logger = logging.getLogger("judges.runner")

MISSING_FIELD: Final = "missing_field"
NO_ROUTE: Final = "no_route"
UNKNOWN_ROUTE: Final = "unknown_route"
TIMEOUT: Final = "timeout"
RATE_LIMITED: Final = "rate_limited"
UPSTREAM_REFUSED: Final = "upstream_refused"
UPSTREAM_ERROR: Final = "upstream_error"
# JudgeRunner.judge_once's results: the row existed (no call), this run wrote it, or another run wrote it
# first, after this one called the judge (a duplicate call) or without a call.
EXISTING: Final = "existing"
WRITTEN: Final = "written"
DUPLICATE: Final = "duplicate"
LOST: Final = "lost"
TRANSIENT_CODES: Final = frozenset({RATE_LIMITED, UPSTREAM_ERROR, TIMEOUT})
# The route's upstream refusing the route itself (a bad key, a wrong model or URL): the judge's configuration.
_CONFIGURATION_STATUSES: Final = frozenset({"UPSTREAM_401", "UPSTREAM_403", "UPSTREAM_404"})
# The outer bound is a backstop behind the proxy's own deadline (call_timeout_s), which ends the call first.
BACKSTOP_S: Final = 1.0


@dataclasses.dataclass(frozen=True, slots=True)
class Target:
    """What an assessment is about: a span of a stored trace (``trace_id``, ``span_id``), an item of an
    evaluation run (``item_index``), or both (a trace-sourced item, or an item whose outputs a call
    generated). The judge call links to the span when both ids are known."""

    trace_id: str | None = None
    span_id: str | None = None
    item_index: int | None = None

    def key(self, evaluation_id: str | None) -> str:
        """The target of the assessment id: the run's item when there is one, else the trace's span."""
        if evaluation_id is not None and self.item_index is not None:
            return item_target(evaluation_id, self.item_index)
        if self.trace_id is None:
            raise ValueError("a judge target needs a trace id, or an item index within an evaluation")
        return trace_target(self.trace_id, self.span_id)


@dataclasses.dataclass(slots=True)
class _Outcome:
    """What the judge calls produced, gathered into the assessment."""

    value: Any = None
    rationale: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    calls: list[Completion] = dataclasses.field(default_factory=list)
    failed_trace_id: str | None = None  # the last call that got no usable answer: its own trace
    failed_attempts: int = 0  # the upstream attempts of the calls that got no answer
    retry_after_s: float | None = None  # the upstream's Retry-After on the last failure
    configuration: bool = False  # the last failure was the route's upstream refusing the route (401/403/404)
    call_count: int = 0
    duration_s: float = 0.0
    route: str | None = None

    def failed(self, code: str, message: str) -> _Outcome:
        self.error_code, self.error_message = code, message
        return self


class JudgeCallDeferred(Exception):
    """(``raise_failures``) A judge call failed in a way another try may not: retry the job later, no
    sooner than ``retry_after_s`` when the upstream said so."""

    def __init__(self, code: str, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.retry_after_s = code, message, retry_after_s


class JudgeMisconfigured(Exception):
    """(``raise_failures``) The judge cannot run as configured (no route, an unknown route, the route's
    upstream refusing it with 401/403/404): pause the judge, keep its jobs."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message


@dataclasses.dataclass(frozen=True, slots=True)
class RunResult:
    """What ``judge_once`` did: the assessment and ``status`` (EXISTING, WRITTEN, DUPLICATE, LOST)."""

    assessment: Assessment
    status: str
    calls: int = 0


class JudgeRunner:
    """Runs judges through the LLM proxy and writes what they say; one per app (per event loop)."""

    def __init__(
        self,
        proxy: LlmProxy,
        settings: JudgesSettings,
        store: AssessmentStore,
        events: EvaluationEvents | None = None,
        feedback: MlflowFeedbackExporter | None = None,
    ) -> None:
        self.proxy = proxy
        self.settings = settings
        self.store = store
        self.events = events if events is not None else EvaluationEvents()
        self.feedback = feedback  # judges.export.mlflow: every assessment written is also queued for MLflow
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._lookup: Coalescer[str, Assessment | None] = Coalescer(self._get_many)
        self._insert: Coalescer[Assessment, bool] = Coalescer(self._insert_new)

    async def _get_many(self, ids: list[str]) -> list[Assessment | None]:
        found = await asyncio.to_thread(self.store.get_many, ids)
        return [found.get(ident) for ident in ids]

    async def _insert_new(self, assessments: list[Assessment]) -> list[bool | Exception]:
        return await asyncio.to_thread(self.store.insert_new, assessments)

    async def run(
        self, judge: Judge, item: Mapping[str, Any], *, target: Target, evaluation_id: str | None = None
    ) -> Assessment:
        """The assessment of ``item`` by ``judge`` (``item``: ``inputs``, ``outputs``, ``expectations``):
        the one already stored under its id, or a new one, written. Never raises for a judge's or an
        upstream's failure (those are error assessments)."""
        result = await self.judge_once(judge, item, target=target, evaluation_id=evaluation_id)
        return result.assessment

    async def judge_once(
        self,
        judge: Judge,
        item: Mapping[str, Any],
        *,
        target: Target,
        evaluation_id: str | None = None,
        raise_failures: bool = False,
    ) -> RunResult:
        """``run``, telling what happened; ``raise_failures`` raises JudgeCallDeferred / JudgeMisconfigured
        (the module's docstring) instead of writing an error assessment for those failures."""
        key = target.key(evaluation_id)
        ident = assessment_id(
            target=key, judge_name=judge.name, judge_version=judge.prompt_version, evaluation_id=evaluation_id
        )
        stored = await self._lookup(ident)
        if stored is not None:
            return RunResult(stored, EXISTING)
        outcome = await self._judge(judge, item, target, evaluation_id)
        if raise_failures:
            _raise_failure(outcome)
        assessment = _assessment(ident, judge, target, evaluation_id, outcome)
        if not await self._insert(assessment):
            # Another run of the same job wrote it first: that one is the result (and emitted it).
            first = await self._lookup(ident) or assessment
            return RunResult(first, DUPLICATE if outcome.call_count else LOST, outcome.call_count)
        self._emit(judge, target, evaluation_id, assessment, outcome)
        metrics.record(
            judge.name,
            assessment.error_code or metrics.OK,
            outcome.duration_s,
            assessment.score,
            outcome.route,
            judge.prompt_version,
        )
        return RunResult(assessment, WRITTEN, outcome.call_count)

    async def record_error(
        self, judge: Judge, *, target: Target, evaluation_id: str | None, code: str, message: str
    ) -> RunResult:
        """An error assessment with no judge call (a queued job given up: too old, or dead-lettered),
        unless the job's assessment exists already."""
        ident = assessment_id(
            target=target.key(evaluation_id),
            judge_name=judge.name,
            judge_version=judge.prompt_version,
            evaluation_id=evaluation_id,
        )
        outcome = _Outcome(route=judge.route).failed(code, message)
        assessment = _assessment(ident, judge, target, evaluation_id, outcome)
        if not await self._insert(assessment):
            stored = await self._lookup(ident)
            return RunResult(stored or assessment, EXISTING)
        self._emit(judge, target, evaluation_id, assessment, outcome)
        metrics.record(judge.name, code, 0.0, None, outcome.route, judge.prompt_version)
        return RunResult(assessment, WRITTEN)

    async def _judge(
        self, judge: Judge, item: Mapping[str, Any], target: Target, evaluation_id: str | None
    ) -> _Outcome:
        outcome = _Outcome(route=judge.route)
        missing = missing_field(judge, item)
        if missing is not None:
            return outcome.failed(MISSING_FIELD, missing)
        if judge.code is not None:
            return await self._run_code(judge, item, outcome)
        if judge.route is None:
            return outcome.failed(
                NO_ROUTE,
                f"The built-in judge {judge.name!r} has no LLM route: set judges.route in the configuration.",
            )
        try:
            request = judge_request(judge, item, judge.route)
        except InvalidParameter as exc:  # a variable without a value (missing_field checks for it first)
            return outcome.failed(MISSING_FIELD, exc.message)
        attributes = _attributes(judge, target, evaluation_id)
        links = [(target.trace_id, target.span_id)] if target.trace_id and target.span_id else []
        answer = await self._call(judge.route, request, attributes, links, outcome)
        if answer is None:
            return outcome
        first = parse_verdict(answer.text, judge.value_kind)
        if isinstance(first, Verdict):
            return _verdict(outcome, first)
        repair = repair_request(request, answer.text, first.message, judge)
        answer = await self._call(judge.route, repair, attributes, links, outcome)
        if answer is None:
            return outcome
        second = parse_verdict(answer.text, judge.value_kind)
        if isinstance(second, Verdict):
            return _verdict(outcome, second)
        return outcome.failed(second.code, _after_repair(first, second))

    async def _run_code(self, judge: Judge, item: Mapping[str, Any], outcome: _Outcome) -> _Outcome:
        """A code judge's function on ``item``: counted as one judge call (a job run twice is a duplicate)."""
        started = time.perf_counter()
        outcome.call_count += 1
        try:
            outcome.value, outcome.rationale = await run_code(judge, item, self.settings.call_timeout_s)
        except CodeJudgeFailed as exc:
            outcome.failed(exc.code, exc.message)
        finally:
            outcome.duration_s += time.perf_counter() - started
        return outcome

    async def _call(
        self,
        route: str,
        body: dict[str, Any],
        attributes: Mapping[str, Any],
        links: list[tuple[str, str]],
        outcome: _Outcome,
    ) -> Completion | None:
        """One judge call in a slot of its route, bounded by ``judges.call_timeout_s``; None (with the
        outcome failed) when no answer came."""
        slots = self._slots.get(route)
        if slots is None:
            slots = self._slots[route] = asyncio.Semaphore(self.settings.route_concurrency)
        timeout_s = self.settings.call_timeout_s
        async with slots:
            started = time.perf_counter()
            outcome.call_count += 1
            try:
                async with asyncio.timeout(timeout_s + BACKSTOP_S):
                    answer = await self.proxy.complete(body, attributes=attributes, links=links, timeout_s=timeout_s)
            except TimeoutError:
                outcome.failed(TIMEOUT, f"The judge call gave no answer within judges.call_timeout_s={timeout_s:g} s.")
                return None
            except ProxyError as exc:
                outcome.failed(_error_code(exc), exc.message)
                outcome.retry_after_s = exc.retry_after_s
                outcome.configuration = exc.error_code in _CONFIGURATION_STATUSES
                outcome.failed_trace_id = exc.trace_id or outcome.failed_trace_id
                outcome.failed_attempts += exc.attempts or 0
                return None
            finally:
                outcome.duration_s += time.perf_counter() - started
        outcome.calls.append(answer)
        return answer

    def _emit(
        self, judge: Judge, target: Target, evaluation_id: str | None, assessment: Assessment, outcome: _Outcome
    ) -> None:
        response_id = outcome.calls[-1].data.get("id") if outcome.calls else None
        self.events.emit_result(
            name=judge.name,
            trace_id=target.trace_id,
            span_id=target.span_id,
            score=assessment.score,
            label=assessment.label,
            explanation=assessment.rationale if assessment.error_code is None else assessment.error_message,
            error_type=assessment.error_code,
            response_id=response_id if isinstance(response_id, str) else None,
            attributes=_attributes(judge, target, evaluation_id),
        )
        if self.feedback is not None:
            self.feedback.submit(assessment)


def _attributes(judge: Judge, target: Target, evaluation_id: str | None) -> dict[str, Any]:
    """The ``gateway.judge.*`` attributes of a judge call's top span and of its result event."""
    attributes: dict[str, Any] = {
        sc.GATEWAY_JUDGE_NAME: judge.name,
        sc.GATEWAY_JUDGE_PROMPT_NAME: judge.prompt_name,
        sc.GATEWAY_JUDGE_PROMPT_VERSION: judge.prompt_version,
    }
    if target.trace_id is not None:
        attributes[sc.GATEWAY_JUDGE_TARGET_TRACE_ID] = target.trace_id
    if target.span_id is not None:
        attributes[sc.GATEWAY_JUDGE_TARGET_SPAN_ID] = target.span_id
    if evaluation_id is not None:
        attributes[sc.GATEWAY_EVALUATION_ID] = evaluation_id
    return attributes


def _verdict(outcome: _Outcome, verdict: Verdict) -> _Outcome:
    outcome.value, outcome.rationale = verdict.value, verdict.rationale
    return outcome


def _after_repair(first: ParseProblem, second: ParseProblem) -> str:
    if first.message == second.message:
        return f"{second.message} (the same after one repair request)"
    return f"{second.message} (after one repair request; the first answer: {first.message})"


def _raise_failure(outcome: _Outcome) -> None:
    """(``raise_failures``) The outcome's failure as JudgeCallDeferred or JudgeMisconfigured, when it is one."""
    code = outcome.error_code
    message = outcome.error_message or ""
    if code in (NO_ROUTE, UNKNOWN_ROUTE) or outcome.configuration:
        raise JudgeMisconfigured(code or UPSTREAM_REFUSED, message)
    if code in TRANSIENT_CODES:
        raise JudgeCallDeferred(code, message, outcome.retry_after_s)


def _error_code(exc: ProxyError) -> str:
    """An upstream failure as the assessment's ``error_code``."""
    if exc.status == 504 or exc.error_type == TIMEOUT:
        return TIMEOUT
    if exc.status == 404 and exc.error_code == "MODEL_NOT_FOUND":
        return UNKNOWN_ROUTE
    if exc.error_type == "429" or exc.retry_after_s is not None:
        return RATE_LIMITED
    if 400 <= exc.status < 500:
        return UPSTREAM_REFUSED
    return UPSTREAM_ERROR


def _assessment(ident: str, judge: Judge, target: Target, evaluation_id: str | None, outcome: _Outcome) -> Assessment:
    calls = outcome.calls
    failed = outcome.error_code is not None
    score, label = (None, None) if failed else score_and_label(outcome.value)
    metadata: dict[str, Any] = {"judge_calls": outcome.call_count}
    if outcome.route is not None:
        metadata["route"] = outcome.route
    if len(calls) > 1:
        metadata["judge_trace_ids"] = [call.trace_id for call in calls]
    if judge.guidelines:
        metadata["guidelines"] = list(judge.guidelines)
    code = judge.code is not None
    if code:
        metadata["code_version"] = judge.prompt_version
    last = calls[-1] if calls else None
    return Assessment(
        id=ident,
        trace_id=target.trace_id,
        span_id=target.span_id,
        evaluation_id=evaluation_id,
        item_index=target.item_index if evaluation_id is not None else None,
        name=judge.name,
        source_type=CODE if code else LLM_JUDGE,
        source_id=judge.prompt_name if code else f"{judge.prompt_name}/{judge.prompt_version}",
        value=None if failed else outcome.value,
        score=score,
        label=label,
        rationale=outcome.rationale,
        error_code=outcome.error_code,
        error_message=outcome.error_message,
        judge_prompt_name=None if code else judge.prompt_name,
        judge_prompt_version=None if code else judge.prompt_version,
        judge_model=(last.response_model or last.target) if last is not None else None,
        judge_trace_id=outcome.failed_trace_id if failed and outcome.failed_trace_id else _trace_of(last),
        input_tokens=_total(call.input_tokens for call in calls),
        output_tokens=_total(call.output_tokens for call in calls),
        cost_usd=_total(call.cost_usd for call in calls),
        latency_ms=round(outcome.duration_s * 1000, 3) if outcome.call_count else None,
        attempts=_total([*(call.attempts for call in calls), outcome.failed_attempts or None]),
        metadata=metadata,
    )


def _trace_of(call: Completion | None) -> str | None:
    return call.trace_id if call is not None else None


def _total(values: Any) -> Any:
    """The sum of the values that are known; None when none is."""
    known = [value for value in values if value is not None]
    return sum(known) if known else None
