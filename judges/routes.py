"""The judges' entries in the route table (the others: gateway/api/routes.py, prompts/routes.py).

Declared here because nothing under gateway/ but its composition points imports ``judges``; gateway.app
places these in the app's table (``app_table``). Key scope ``evaluations``.
"""

from __future__ import annotations

from gateway.api import schemas as s
from gateway.api.routing import ApiRoute
from judges import api

GET, POST = ("GET",), ("POST",)

_STORE = {503: "The store is unavailable (Retry-After)"}
_NUMBER = {"type": "number"}
_VALUE_KIND = s.obj(
    ("type",),
    type={"enum": ["bool", "int", "float", "categorical"]},
    min={**_NUMBER, "description": "int and float: the lowest value"},
    max={**_NUMBER, "description": "int and float: the highest value"},
    labels={"type": "array", "items": s.STRING, "description": "categorical: 2 to 50 labels"},
)
_JUDGE = s.obj(
    ("name", "builtin", "prompt_name", "prompt_version", "route", "value_kind", "required_fields", "instructions"),
    name=s.STRING,
    description=s.NULLABLE_STRING,
    builtin={"type": "boolean"},
    prompt_name={**s.STRING, "description": "judges.<name>: the judge is its version at alias production"},
    prompt_version=s.INTEGER,
    route={**s.NULLABLE_STRING, "description": "The LLM route that runs it (null: a built-in and no judges.route)"},
    value_kind=_VALUE_KIND,
    required_fields={
        "type": "array",
        "items": s.STRING,
        "description": "What it reads from an item; 'a | b': one of them",
    },
    instructions=s.STRING,
)
_LISTED = s.obj(
    ("name", "prompt_name"),
    name=s.STRING,
    prompt_name=s.STRING,
    problem={**s.STRING, "description": "Only for a prompt judges.<name> that is not a usable judge"},
)
_CREATE = s.json_body(
    s.obj(
        ("name", "instructions", "route", "value_kind"),
        name={**s.STRING, "description": "A letter, then up to 57 letters, digits, '_' or '-'"},
        instructions={**s.STRING, "description": "Using only {{ inputs }}, {{ outputs }}, {{ expectations }}"},
        route={**s.STRING, "description": "An LLM route of this gateway"},
        value_kind=_VALUE_KIND,
        description=s.NULLABLE_STRING,
    )
)
_AGREEMENT = s.json_body(
    s.obj(
        ("name", "count", "percent_agreement", "kappa", "weighting", "labels", "confusion_matrix"),
        name=s.STRING,
        value_kind=_VALUE_KIND,
        prompt_name=s.STRING,
        prompt_version=s.INTEGER,
        count=s.INTEGER,
        excluded=s.INTEGER,
        percent_agreement={"type": ["number", "null"]},
        kappa={"type": ["number", "null"]},
        kappa_reason=s.NULLABLE_STRING,
        weighting={"enum": ["none", "quadratic"]},
        labels={"type": "array"},
        confusion_matrix={
            "type": "array",
            "items": {"type": "array", "items": s.INTEGER},
            "description": "Rows: the people's label; columns: the judge's",
        },
    )
)
_LOOKUP_ERRORS = {400: "Not a judge name", 404: "No such judge", 409: "The prompt judges.<name> is not a usable judge"}

JUDGE_ROUTES = (
    ApiRoute(POST, "/api/judges", api.create_judge, "evaluations",
             "Create a custom judge, or edit one: a new version of its prompt judges.<name>",
             (201, s.json_body(_JUDGE)),
             {400: "A bad field, a variable other than inputs, outputs, expectations (named), or an unknown route",
              409: "The name of a built-in judge", **_STORE}, _CREATE),
    ApiRoute(GET, "/api/judges", api.list_judges, "evaluations", "The built-in and custom judges",
             (200, s.json_body(s.obj(("judges",), judges={"type": "array", "items": {"anyOf": [_JUDGE, _LISTED]}}))),
             {400: "Bad query parameter"}),
    ApiRoute(GET, "/api/judges/{name}", api.get_judge, "evaluations",
             "A judge: its prompt name and version, route, value kind and required fields",
             (200, s.json_body(_JUDGE)), _LOOKUP_ERRORS),
    ApiRoute(GET, "/api/judges/{name}/agreement", api.get_agreement, "evaluations",
             "How the judge agrees with human feedback of the same name: count, percent agreement, Cohen's kappa "
             "(quadratic-weighted for int and float scales), confusion matrix",
             (200, _AGREEMENT), {**_LOOKUP_ERRORS, 400: "Not a judge name, or a query parameter", **_STORE}),
)  # fmt: skip
