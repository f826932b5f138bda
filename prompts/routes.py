"""The prompt registry's entries in the route table (the table's other entries: gateway/api/routes.py).

Declared here because nothing under gateway/ but its composition points imports ``prompts``; gateway.app
places these in the app's table (``app_table``). Reads answer from the worker's cache with an ETag, and
``If-None-Match`` gives 304; ``GET /api/prompts/{name}`` (and ``{name}@{alias}``) is hot.
"""

from __future__ import annotations

from gateway.api import schemas as s
from gateway.api.routing import ApiRoute, Param
from prompts import api

GET, POST, PUT, PATCH, DELETE = ("GET",), ("POST",), ("PUT",), ("PATCH",), ("DELETE",)

_IF_NONE_MATCH = Param("If-None-Match", "An ETag of an earlier answer: 304 when it still holds")
_STORE = {503: "The store is unavailable (Retry-After)"}
_PROMPT = s.obj(
    ("name",),
    name=s.STRING,
    description=s.NULLABLE_STRING,
    tags=s.TAGS,
    created_at=s.INTEGER,
    updated_at=s.INTEGER,
    latest_version={"type": ["integer", "null"]},
    aliases={"type": "object", "additionalProperties": s.INTEGER},
)
_TEMPLATE = {
    "oneOf": [
        {**s.STRING, "description": "A text template with {{ variable }} placeholders"},
        {"type": "array", "items": s.obj(("role", "content"), role=s.STRING, content=s.STRING)},
    ]
}
_VERSION = s.obj(
    ("name", "version", "template_type", "template"),
    name=s.STRING,
    version=s.INTEGER,
    template_type={"enum": ["text", "chat"]},
    template=_TEMPLATE,
    variables={"type": "array", "items": s.STRING},
    commit_message=s.NULLABLE_STRING,
    tags=s.TAGS,
    response_format={"type": ["object", "null"]},
    model_config={"type": ["object", "null"]},
    created_at=s.INTEGER,
    aliases={"type": "array", "items": s.STRING},
)
_VERSIONS = s.json_body(s.obj(("versions",), versions={"type": "array", "items": _VERSION}))
_RENDER = s.json_body(s.obj((), variables={"type": "object"}))
_RENDERED = s.json_body(
    s.obj(("name", "version", "template_type"), name=s.STRING, version=s.INTEGER, template_type=s.STRING,
          text=s.STRING, messages={"type": "array", "items": s.OBJECT}, model_config={"type": ["object", "null"]},
          response_format={"type": ["object", "null"]})
)  # fmt: skip
_CREATE_VERSION = s.json_body(
    s.obj(("template",), template=_TEMPLATE, commit_message=s.NULLABLE_STRING, tags=s.TAGS_IN,
          response_format={"type": ["object", "null"]}, model_config={"type": ["object", "null"]})
)  # fmt: skip
_RENDER_ERRORS = {400: "Missing variables (all named) or a bad body", 404: "Unknown prompt, version or alias"}

# In Starlette's matching order; the routes below /api/prompts/ share one Mount (gateway/api/routing.py).
PROMPT_ROUTES = (
    ApiRoute(GET, "/api/prompts/{name}", api.get_prompt, "prompts:read",
             "A prompt with its versions and aliases or, for NAME@ALIAS (@latest built in), that version",
             (200, s.json_body(s.OBJECT)), {400: "Bad name", 404: "Unknown prompt or alias"},
             headers=(_IF_NONE_MATCH,), hot=True),
    ApiRoute(GET, "/api/prompts/{name}/versions/{version}", api.get_version, "prompts:read", "A prompt version",
             (200, s.json_body(_VERSION)), {400: "Bad name or version", 404: "Not found"},
             headers=(_IF_NONE_MATCH,)),
    ApiRoute(POST, "/api/prompts/{name}/render", api.render_ref, "prompts:read",
             "Render the version NAME@ALIAS names (a bare name: its latest version)",
             (200, _RENDERED), _RENDER_ERRORS, _RENDER),
    ApiRoute(POST, "/api/prompts/{name}/versions/{version}/render", api.render_version, "prompts:read",
             "Render a version", (200, _RENDERED), _RENDER_ERRORS, _RENDER),
    ApiRoute(PATCH, "/api/prompts/{name}", api.update_prompt, "prompts:write",
             "Change a prompt's description or tags", (200, s.json_body(_PROMPT)),
             {400: "Bad field", 404: "Unknown prompt", **_STORE},
             s.json_body(s.obj((), description=s.NULLABLE_STRING, tags=s.TAGS_IN))),
    ApiRoute(GET, "/api/prompts/{name}/versions", api.list_versions, "prompts:read", "The prompt's versions",
             (200, _VERSIONS), {400: "Bad name", 404: "Unknown prompt"}, headers=(_IF_NONE_MATCH,)),
    ApiRoute(POST, "/api/prompts/{name}/versions", api.create_version, "prompts:write",
             "Register the next version (versions are immutable)", (201, s.json_body(_VERSION)),
             {400: "Bad template or field", 404: "Unknown prompt", **_STORE}, _CREATE_VERSION),
    ApiRoute(("PUT", "PATCH", "DELETE"), "/api/prompts/{name}/versions/{version}", api.refuse_version_change,
             "prompts:write", "Refused: versions are immutable", (405, None),
             {405: "Versions are immutable (Allow: GET)"}),
    ApiRoute(PUT, "/api/prompts/{name}/aliases/{alias}", api.set_alias, "prompts:write",
             "Point an alias at a version", (200, s.ALIAS),
             {400: "Reserved or bad alias, or bad version", 404: "No such version", **_STORE}, s.SET_ALIAS),
    ApiRoute(DELETE, "/api/prompts/{name}/aliases/{alias}", api.delete_alias, "prompts:write", "Delete an alias",
             (204, None), {400: "Bad name", 404: "No such alias", **_STORE}),
    ApiRoute(GET, "/api/prompts", api.list_prompts, "prompts:read", "List prompts by name",
             (200, s.json_body(s.obj(("prompts",), prompts={"type": "array", "items": _PROMPT},
                                     next_page_token=s.STRING))),
             {400: "Bad query parameter"}, headers=(_IF_NONE_MATCH,),
             query=(Param("name_prefix", "Names starting with this"),
                    Param("tag", "KEY=VALUE, or KEY for any value", repeated=True),
                    Param("max_results", "Page size (1-1000, default 100)", {"type": "integer"}),
                    Param("page_token", "The previous page's next_page_token"))),
    ApiRoute(POST, "/api/prompts", api.create_prompt, "prompts:write", "Create a prompt",
             (201, s.json_body(_PROMPT)), {400: "Bad name or field", 409: "Exists", **_STORE},
             s.json_body(s.obj(("name",), name=s.STRING, description=s.NULLABLE_STRING, tags=s.TAGS_IN))),
)  # fmt: skip
