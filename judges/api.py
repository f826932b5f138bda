"""``/api/judges``: create (or edit) custom judges, list and show every judge, and how a judge agrees with
people (routes: judges/routes.py).

Reads answer from the worker's judge catalog (the prompt cache, in memory); a write goes to the store,
then refreshes this worker's cache and tells the other replicas, as the prompt API does. The agreement
figures are computed over ``AssessmentStore.pairs(name)``: every target that holds both a person's
(``HUMAN``) and a judge's (``LLM_JUDGE``) error-free assessment of that name (judges/agreement.py:
count, percent agreement, Cohen's kappa, quadratic-weighted for int and float scales, and the confusion
matrix, as scikit-learn computes them).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import InvalidParameter
from gateway.http import ORJSONResponse, read_json_object
from gateway.judge_settings import JudgesSettings
from gateway.llm.proxy import LlmProxy
from gateway.store.assessments import AssessmentStore
from gateway.telemetry.events import EvaluationEvents
from judges.agreement import agreement
from judges.catalog import JudgeCatalog, judge_list
from judges.definitions import parse_judge_spec
from judges.mlflow_feedback import MlflowFeedbackExporter
from judges.queue_api import pause_of
from judges.runner import JudgeRunner
from prompts.api import PromptsState


@dataclass(eq=False)
class JudgesState:
    """What the judge endpoints (and the evaluation runs) share: ``app.state.judges``."""

    catalog: JudgeCatalog
    runner: JudgeRunner
    assessments: AssessmentStore
    routes: frozenset[str]  # the LLM routes of this gateway: a judge must run on one of them
    after_write: Callable[[], Awaitable[None]]  # refresh this worker's prompt cache, tell the other replicas
    feedback: MlflowFeedbackExporter | None = None  # judges.export.mlflow: assessments also sent to MLflow

    async def close(self, timeout_s: float) -> None:
        """At shutdown, after the judging stopped: what is queued for MLflow is sent within ``timeout_s``."""
        if self.feedback is not None:
            await self.feedback.close(timeout_s)


async def start_judges(
    settings: JudgesSettings,
    prompts: PromptsState,
    proxy: LlmProxy,
    assessments: AssessmentStore,
    events: EvaluationEvents,
    routes: Collection[str],
) -> JudgesState:
    """At start (gateway.app's lifespan): seed the built-ins the store lacks, then the catalog over the
    prompt cache and the runner over this app's LLM proxy (with ``judges.export.mlflow``, the exporter of
    its assessments to MLflow, started: ``JudgesState.close`` stops it)."""
    catalog = JudgeCatalog(prompts.cache, settings)
    await asyncio.to_thread(catalog.seed)
    # Always: when seed returns, every built-in is in the store, but those another worker seeded (which
    # this one found there) are not in this worker's cache yet; its refresher would see them only within
    # serving.refresh_interval_s, and a request in between found no judge 'correctness'.
    await prompts.cache.refresh()
    feedback = None
    if settings.export.mlflow is not None:
        feedback = MlflowFeedbackExporter(settings.export.mlflow)
        feedback.start()
    runner = JudgeRunner(proxy, settings, assessments, events, feedback)
    return JudgesState(catalog, runner, assessments, frozenset(routes), prompts.after_write, feedback)


def _state(request: Request) -> JudgesState:
    state: JudgesState = request.app.state.judges
    return state


def _no_query(request: Request) -> None:
    if request.query_params:
        raise InvalidParameter(f"Unknown query parameter(s) {', '.join(sorted(set(request.query_params)))}.")


async def create_judge(request: Request) -> Response:
    """``POST /api/judges`` ``{name, instructions, route, value_kind, description?}``: a custom judge, or
    a new version of one (201 either way, with the judge as it now is)."""
    state = _state(request)
    spec = parse_judge_spec(await read_json_object(request))
    judge = await run_in_threadpool(lambda: state.catalog.create(spec, routes=state.routes))
    await state.after_write()
    return ORJSONResponse(judge.to_dict(), status_code=201)


async def list_judges(request: Request) -> Response:
    """``GET /api/judges``: the built-in and custom judges, by name."""
    _no_query(request)
    return ORJSONResponse({"judges": judge_list(_state(request).catalog.judges())})


async def get_judge(request: Request) -> Response:
    """``GET /api/judges/{name}``: its prompt name and version, route, value kind, required fields, and
    ``paused``: why the judge queue holds its jobs (a configuration failure; null when it does not)."""
    judge = _state(request).catalog.get(request.path_params["name"])
    return ORJSONResponse({**judge.to_dict(), "paused": await pause_of(request, judge.name)})


async def get_agreement(request: Request) -> Response:
    """``GET /api/judges/{name}/agreement``: the judge against human feedback of the same name."""
    _no_query(request)
    state = _state(request)
    judge = state.catalog.get(request.path_params["name"])
    pairs = await asyncio.to_thread(state.assessments.pairs, judge.name)
    figures = agreement(pairs, judge.value_kind)
    return ORJSONResponse(
        {
            "name": judge.name,
            "value_kind": judge.value_kind.to_dict(),
            "prompt_name": judge.prompt_name,
            "prompt_version": judge.prompt_version,
            **figures,
        }
    )
