"""Evaluation runs over HTTP (routes: judges/evaluation_routes.py), thin over ``app.state.evaluations``
(:class:`judges.evaluations.EvaluationService`).

``POST /api/evaluations`` answers 202 with the run's id, counts and estimate (200 with the counts and the
estimate alone for ``"dry_run": true``); ``GET /api/evaluations/{id}`` the run's status, progress,
aggregates and, unless ``?items=false``, its items with their assessments; ``DELETE`` cancels. Human labels
on an item take the body of ``POST /api/traces/{id}/assessments`` (gateway/api/traces.py), by the same rules.
"""

from __future__ import annotations

import asyncio
import re
from typing import Final

from starlette.requests import Request
from starlette.responses import Response

from gateway.api.feedback import parse_feedback
from gateway.errors import BadRequest, InvalidParameter
from gateway.http import ORJSONResponse, json_limits, read_json_object
from gateway.store.assessments import HUMAN, Assessment, assessment_id, item_target, score_and_label, trace_target
from judges.evaluation_request import parse_request
from judges.evaluations import EvaluationService

DEFAULT_LIMIT: Final = 50
MAX_LIMIT: Final = 200
_LIST_PARAMS: Final = ("limit", "page_token")
_GET_PARAMS: Final = ("items",)
_INDEX: Final = re.compile(r"\d{1,9}")


def _service(request: Request) -> EvaluationService:
    service: EvaluationService = request.app.state.evaluations
    return service


def _known_params(request: Request, known: tuple[str, ...]) -> None:
    unknown = sorted(set(request.query_params) - set(known))
    if unknown:
        raise InvalidParameter(f"Unknown query parameter(s) {', '.join(unknown)}; known: {', '.join(known) or 'none'}.")


async def create_evaluation(request: Request) -> Response:
    body = await read_json_object(request, json_limits(request).evaluation)  # the data set inline
    parsed = parse_request(body)
    answer = await _service(request).create(parsed)
    return ORJSONResponse(answer, status_code=200 if parsed.dry_run else 202)


async def list_evaluations(request: Request) -> Response:
    _known_params(request, _LIST_PARAMS)
    text = request.query_params.get("limit")
    limit = DEFAULT_LIMIT
    if text:
        if not _INDEX.fullmatch(text.strip()) or not 1 <= int(text) <= MAX_LIMIT:
            raise InvalidParameter(f"limit must be an integer from 1 to {MAX_LIMIT}, got {text[:40]!r}.")
        limit = int(text)
    answer = await _service(request).list(limit, request.query_params.get("page_token") or None)
    return ORJSONResponse(answer)


async def get_evaluation(request: Request) -> Response:
    _known_params(request, _GET_PARAMS)
    text = request.query_params.get("items", "true").strip().lower()
    if text not in ("true", "false", "1", "0"):
        raise InvalidParameter(f"items must be true or false, got {text[:40]!r}.")
    view = await _service(request).view(request.path_params["evaluation_id"], include_items=text in ("true", "1"))
    return ORJSONResponse(view)


async def cancel_evaluation(request: Request) -> Response:
    return ORJSONResponse(await _service(request).cancel(request.path_params["evaluation_id"]))


async def record_item_feedback(request: Request) -> Response:
    """Human feedback on an item: ``{"name", "value", "rationale"?, "source_id"?, "span_id"?, "metadata"?}``
    as on a trace; 201 with the stored assessment. On an item judged on a span (a stored call, or generated
    outputs) the label targets that span, so it pairs with the judges' verdicts for agreement figures."""
    evaluation_id: str = request.path_params["evaluation_id"]
    index_text: str = request.path_params["item_index"]
    body = await read_json_object(request)  # first: a body that is not JSON is a 415 whatever the path says
    if not _INDEX.fullmatch(index_text):
        raise InvalidParameter(f"item_index must be a whole number (0 for the first item), got {index_text[:40]!r}.")
    feedback = parse_feedback(body)
    span_id = feedback.span_id
    service = _service(request)
    item = await service.item(evaluation_id, int(index_text))
    trace_id, item_span = item["trace_id"], item["span_id"]
    if span_id is not None and span_id.lower() != (item_span or ""):
        raise BadRequest(
            f"Field 'span_id': item {index_text} is judged on "
            + (f"span {item_span}" if item_span else "its own inputs and outputs (no span)")
            + f", not {span_id[:40]!r}; leave span_id out."
        )
    target = trace_target(trace_id, item_span) if trace_id else item_target(evaluation_id, int(index_text))
    score, label = score_and_label(feedback.value)
    assessment = Assessment(
        id=assessment_id(target=target, judge_name=feedback.name, judge_version=f"human:{feedback.source_id or ''}",
                         evaluation_id=None if trace_id else evaluation_id),
        trace_id=trace_id, span_id=item_span, evaluation_id=evaluation_id, item_index=int(index_text),
        name=feedback.name, source_type=HUMAN, source_id=feedback.source_id, value=feedback.value, score=score,
        label=label, rationale=feedback.rationale, metadata=feedback.metadata,
    )  # fmt: skip
    stored = await asyncio.to_thread(service.assessments.upsert_human, assessment)
    return ORJSONResponse(stored.to_dict(), status_code=201)
