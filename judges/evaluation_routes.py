"""Evaluation runs in the route table (``EVALUATION_ROUTES``, composed by gateway/app.py next to the
judges' ``JUDGE_ROUTES``; nothing under gateway/ but its composition points imports ``judges``).

The schemas document what the endpoints read and answer; the endpoints check bodies themselves, with
400s naming the field (judges/evaluation_request.py), so the request schema stays loose where they accept more.
"""

from __future__ import annotations

from gateway.api import schemas as s
from gateway.api.routing import ApiRoute, Param
from judges import evaluation_api as api

GET, POST, DELETE = ("GET",), ("POST",), ("DELETE",)

_NULLABLE_INTEGER = {"type": ["integer", "null"]}
_NULLABLE_NUMBER = {"type": ["number", "null"]}
_STORE = {503: "The store is unavailable (Retry-After)"}
_JUDGE = {
    "oneOf": [
        {**s.STRING, "description": "A judge's name (built-in or custom: GET /api/judges)"},
        s.obj(("name",), name=s.STRING, guidelines={**s.STRING, "description": "For the guidelines judge"}),
    ]
}
_ITEM = s.obj(
    ("inputs",),
    inputs={"description": "The request: text, or an object (a target's prompt takes it as its variables)"},
    outputs={"description": "The answer to judge; generated through 'target' when absent"},
    expectations={"type": ["object", "null"], "description": "expected_response, expected_facts, context, ..."},
)
_TRACE_FILTER = s.obj(
    (),
    route=s.STRING,
    prompt_name=s.STRING,
    prompt_version={"type": "integer", "minimum": 1},
    to={"type": ["integer", "string"], "description": "Epoch ms or ISO 8601 (exclusive)"},
    limit={"type": "integer", "minimum": 1, "description": "At most this many calls (judges.max_trace_items caps it)"},
    **{"from": {"type": ["integer", "string"], "description": "Epoch ms or ISO 8601 (inclusive)"}},
)
CREATE = s.json_body(
    {
        **s.obj(
            ("judges",),
            judges={"type": "array", "items": _JUDGE, "minItems": 1},
            items={"type": "array", "items": _ITEM, "minItems": 1},
            trace_ids={"type": "array", "items": {**s.STRING, "pattern": "^[0-9a-fA-F]{32}$"}, "minItems": 1},
            traces=_TRACE_FILTER,
            target=s.obj(("route",), route=s.STRING,
                         prompt={**s.STRING, "description": "prompts:/NAME@ALIAS or prompts:/NAME/VERSION"}),
            dry_run={"type": "boolean"},
            name=s.STRING,
        ),
        "description": "judges and exactly one of items, trace_ids or traces",
    }
)  # fmt: skip
_ESTIMATE = s.obj(("input_tokens", "output_tokens", "cost_usd", "by_route"), input_tokens=s.INTEGER,
                  output_tokens=s.INTEGER, cost_usd=_NULLABLE_NUMBER, by_route=s.OBJECT, method=s.STRING)  # fmt: skip
CREATED = s.json_body(
    s.obj(
        ("items", "judges", "judge_calls", "target_calls", "estimate"),
        id={**s.STRING, "description": "Absent for a dry run"},
        status=s.STRING,
        dry_run={"type": "boolean"},
        items=s.INTEGER,
        judges={"type": "array", "items": s.STRING},
        judge_calls=s.INTEGER,
        target_calls=s.INTEGER,
        cap=s.obj((), limit=s.INTEGER, matched_more={"type": "boolean"},
                  **{"from": {**s.STRING, "description": "judges.max_trace_items or traces.limit"}}),
        estimate=_ESTIMATE,
    )
)  # fmt: skip
_AGGREGATE = s.obj(("count", "errors", "mean_score", "pass_rate", "labels"), count=s.INTEGER, errors=s.INTEGER,
                   mean_score=_NULLABLE_NUMBER, pass_rate=_NULLABLE_NUMBER,
                   labels={"type": "object", "additionalProperties": s.INTEGER})  # fmt: skip
_AGGREGATES = {"type": "object", "additionalProperties": _AGGREGATE, "description": "Per judge"}
_STATUS = {"enum": ["queued", "running", "completed", "cancelled", "failed"]}
_RUN = dict(
    id=s.STRING, status=_STATUS, name=s.NULLABLE_STRING, created_at=s.INTEGER, started_at=_NULLABLE_INTEGER,
    finished_at=_NULLABLE_INTEGER, error_message=s.NULLABLE_STRING, item_count=s.INTEGER, judge_count=s.INTEGER,
    judges={"type": "array", "items": s.STRING},
)  # fmt: skip
RUN = s.json_body(
    s.obj(
        ("id", "status", "progress", "aggregates", "by_version"),
        **_RUN,
        request=s.OBJECT,
        progress=s.obj(("done", "errors", "pending", "total"), done=s.INTEGER, errors=s.INTEGER,
                       pending=s.INTEGER, total=s.INTEGER),
        aggregates=_AGGREGATES,
        by_version={"type": "array", "items": s.obj(
            ("items", "judges"), prompt_name=s.NULLABLE_STRING, prompt_version=_NULLABLE_INTEGER,
            model=s.NULLABLE_STRING, items=s.INTEGER, judges=_AGGREGATES)},
        items={"type": "array", "description": "Absent with ?items=false", "items": s.obj(
            ("index", "status", "assessments"), index=s.INTEGER, status={"enum": ["pending", "done", "error"]},
            inputs={}, outputs={}, expectations={}, trace_id=s.NULLABLE_STRING, span_id=s.NULLABLE_STRING,
            prompt_name=s.NULLABLE_STRING, prompt_version=_NULLABLE_INTEGER, model=s.NULLABLE_STRING,
            error_message=s.NULLABLE_STRING, assessments={"type": "array", "items": s.ASSESSMENT})},
    )
)  # fmt: skip
RUNS = s.json_body(
    s.obj(("evaluations", "next_page_token"),
          evaluations={"type": "array", "items": s.obj(("id", "status"), **_RUN, source=s.STRING, target={})},
          next_page_token=s.NULLABLE_STRING)
)  # fmt: skip

_NOT_FOUND = {404: "No such evaluation"}

EVALUATION_ROUTES = (
    ApiRoute(POST, "/api/evaluations", api.create_evaluation, "evaluations",
             "Start an evaluation run (202 with its id); with dry_run, 200 with the counts and a cost estimate",
             (202, CREATED), {400: "A bad field (named), an unknown judge, route, prompt or trace",
                              413: "Body larger than http.max_evaluation_body_bytes", **_STORE},
             CREATE, also_ok={200: CREATED}),
    ApiRoute(GET, "/api/evaluations", api.list_evaluations, "evaluations", "Evaluation runs, newest first",
             (200, RUNS), {400: "Bad query parameter", **_STORE},
             query=(Param("limit", "Page size (1-200, default 50)", {"type": "integer", "minimum": 1, "maximum": 200}),
                    Param("page_token", "The previous page's next_page_token"))),
    ApiRoute(GET, "/api/evaluations/{evaluation_id}", api.get_evaluation, "evaluations",
             "A run: status, progress, aggregates per judge and per prompt version and model, items",
             (200, RUN), {400: "Bad query parameter", **_NOT_FOUND, **_STORE},
             query=(Param("items", "false: leave the items out", {"type": "boolean"}),)),
    ApiRoute(DELETE, "/api/evaluations/{evaluation_id}", api.cancel_evaluation, "evaluations",
             "Cancel a run: items not started are dropped, the ones in work finish",
             (200, RUN), {**_NOT_FOUND, 409: "The run has completed or failed", **_STORE}),
    ApiRoute(POST, "/api/evaluations/{evaluation_id}/items/{item_index}/assessments", api.record_item_feedback,
             "evaluations", "Record human feedback on an item (the same source_id again replaces its label)",
             (201, s.json_body(s.ASSESSMENT)),
             {400: "Bad item index or field", 404: "No such evaluation or item", **_STORE}, s.FEEDBACK),
)  # fmt: skip
