"""The judges' entries in the route table (the others: gateway/api/routes.py, prompts/routes.py).

Declared here because nothing under gateway/ but its composition points imports ``judges``; gateway.app
places these in the app's table (``app_table``). Key scope ``evaluations``.
"""

from __future__ import annotations

from gateway.api import schemas as s
from gateway.api.routing import ApiRoute
from judges import api, queue_api
from judges.online import api as online_api

GET, POST, PUT = ("GET",), ("POST",), ("PUT",)

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
    instructions={**s.STRING, "description": "Empty for a code judge"},
    kind={"enum": ["code"], "description": "Only for a code judge (judges.code in the configuration)"},
    function={**s.STRING, "description": "A code judge's function, package.module:function"},
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
_ONLINE_RULE = s.obj(
    ("route", "judges"),
    route={**s.STRING, "description": "An LLM route of this gateway that captures content"},
    prompt={**s.STRING, "description": "Only calls rendered from this prompt"},
    prompt_version={**s.INTEGER, "description": "... at this version (or prompt_alias)"},
    prompt_alias={**s.STRING, "description": "... at the version this alias names when the call ends"},
    operation={"enum": ["chat", "text_completion"], "description": "gen_ai.operation.name (default: both)"},
    judges={
        "type": "array",
        "items": s.obj(("name", "rate"), name=s.STRING, rate={"type": "number", "minimum": 0, "maximum": 1}),
    },
)
_ONLINE_RULES = s.obj(("rules",), rules={"type": "array", "items": _ONLINE_RULE})
_ONLINE = s.obj(
    ("rules", "running", "buffered"),
    rules={"type": "array", "items": _ONLINE_RULE},
    running={"type": "boolean", "description": "Some rule is in force in this process (calls are sampled)"},
    buffered={**s.INTEGER, "description": "Jobs waiting in this process for the judge queue"},
)
_QUEUE_DOWN = {503: "The judge queue (Redis, or the store) is unavailable"}
_PAUSE = {**s.NULLABLE_STRING, "description": "Why the queue holds the judge's jobs (null: it does not)"}
_JUDGE_SHOWN = {**_JUDGE, "properties": {**_JUDGE["properties"], "paused": _PAUSE}}
_QUEUE = s.json_body(
    s.obj(
        ("backend", "judges"),
        backend={"enum": ["redis", "store"]},
        judges={
            "type": "array",
            "items": s.obj(
                ("judge", "depth", "pending", "delayed", "oldest_age_s", "dead_letters", "paused"),
                judge=s.STRING,
                depth={**s.INTEGER, "description": "Jobs not done: waiting, delayed or in hand"},
                pending={**s.INTEGER, "description": "Handed to a worker, not acked"},
                delayed={**s.INTEGER, "description": "Waiting for a retry time"},
                oldest_age_s={**_NUMBER, "description": "Age of the oldest job not done (0: none)"},
                dead_letters=s.INTEGER,
                paused=_PAUSE,
            ),
        },
    )
)
_RESUMED = s.json_body(s.obj(("name", "was_paused"), name=s.STRING, was_paused=_PAUSE))
_LOOKUP_ERRORS = {400: "Not a judge name", 404: "No such judge", 409: "The prompt judges.<name> is not a usable judge"}

JUDGE_ROUTES = (
    # Before /api/judges/{name}: the first full match wins.
    ApiRoute(GET, "/api/judges/online", online_api.get_online, "evaluations",
             "The online judge rules in force in this process (judges on live traffic)",
             (200, s.json_body(_ONLINE)), {400: "A query parameter"}),
    ApiRoute(PUT, "/api/judges/online", online_api.put_online, "evaluations",
             "Replace the online judge rules in this process (until restart; other processes keep theirs)",
             (200, s.json_body(_ONLINE)),
             {400: "A bad rule (the field is named), a route that does not capture content, or an unknown judge"},
             s.json_body(_ONLINE_RULES)),
    ApiRoute(POST, "/api/judges", api.create_judge, "evaluations",
             "Create a custom judge, or edit one: a new version of its prompt judges.<name>",
             (201, s.json_body(_JUDGE)),
             {400: "A bad field, a variable other than inputs, outputs, expectations (named), or an unknown route",
              409: "The name of a built-in judge", **_STORE}, _CREATE),
    ApiRoute(GET, "/api/judges", api.list_judges, "evaluations", "The built-in and custom judges",
             (200, s.json_body(s.obj(("judges",), judges={"type": "array", "items": {"anyOf": [_JUDGE, _LISTED]}}))),
             {400: "Bad query parameter"}),
    ApiRoute(GET, "/api/judges/queue", queue_api.get_queue, "evaluations",
             "The judge queue per judge: jobs not done, in hand, delayed, the oldest one's age, dead letters, pause",
             (200, _QUEUE), {400: "A query parameter", **_QUEUE_DOWN}),
    ApiRoute(GET, "/api/judges/{name}", api.get_judge, "evaluations",
             "A judge: its prompt name and version, route, value kind and required fields, and its pause",
             (200, s.json_body(_JUDGE_SHOWN)), {**_LOOKUP_ERRORS, **_QUEUE_DOWN}),
    ApiRoute(POST, "/api/judges/{name}/resume", queue_api.resume_judge, "evaluations",
             "Resume a judge paused by a configuration failure: its queued jobs run again (idempotent)",
             (200, _RESUMED), _QUEUE_DOWN),
    ApiRoute(GET, "/api/judges/{name}/agreement", api.get_agreement, "evaluations",
             "How the judge agrees with human feedback of the same name: count, percent agreement, Cohen's kappa "
             "(quadratic-weighted for int and float scales), confusion matrix",
             (200, _AGREEMENT), {**_LOOKUP_ERRORS, 400: "Not a judge name, or a query parameter", **_STORE}),
)  # fmt: skip
