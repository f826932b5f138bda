"""The route table: every endpoint of the gateway, declared once.

Starlette's router, the fast dispatcher (``hot=True``: answered before the router, see gateway/api/routing.py)
and the OpenAPI document (gateway/api/openapi.py) are all built from it; adding a route is one entry here
(or, for the prompt registry, in prompts/routes.py). ``app_table`` composes the app's whole table in
Starlette's matching order: the first full match wins, so the hot routes come first.

Scopes (required when gateway keys are configured: gateway/keys.py; the list is SCOPES in
gateway/llm/routes_config.py): ``invoke`` scoring, ``llm`` the LLM proxy, ``registry:read``/``registry:write``,
``prompts:read``/``prompts:write``, ``traces:read`` (traces and usage), ``evaluations``, ``admin`` (keys, the
OpenAPI document), ``metrics`` for /metrics; None for the routes open to anyone. The LLM routes answer errors in
OpenAI's shape, but ``/v1/messages`` in Anthropic's (its clients are Anthropic's SDKs).
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.api import keys, llm, ops, registry, serving, traces
from gateway.api import mlflow_registry as mlflow
from gateway.api import schemas as s
from gateway.api.routing import ApiRoute, Param

GET, POST, PUT, PATCH, DELETE = ("GET",), ("POST",), ("PUT",), ("PATCH",), ("DELETE",)

_TIMEOUT = Param(serving.TIMEOUT_HEADER, "Milliseconds this request may wait (only shortens the server's deadline)")
_NOT_FOUND = {404: "Not found"}
_STORE = {503: "The registry store is unavailable (Retry-After)"}

SCORING = (
    ApiRoute(POST, "/invocations", serving.invocations, "invoke", "Score with the default model",
             (200, s.PREDICTIONS), s.SCORING_ERRORS, s.SCORING_REQUEST, headers=(_TIMEOUT,), hot=True),
    ApiRoute(POST, "/models/{ref}/invocations", serving.invocations_by_ref, "invoke",
             "Score with the version an alias points at ({ref} is NAME@ALIAS)",
             (200, s.PREDICTIONS), s.SCORING_ERRORS, s.SCORING_REQUEST, headers=(_TIMEOUT,), hot=True),
    ApiRoute(POST, "/models/{name}/versions/{version}/invocations", serving.invocations_by_version, "invoke",
             "Score with one model version",
             (200, s.PREDICTIONS), s.SCORING_ERRORS, s.SCORING_REQUEST, headers=(_TIMEOUT,), hot=True),
)  # fmt: skip

LLM = (
    ApiRoute(POST, "/v1/chat/completions", llm.chat_completions, "llm", "A chat completion through a configured route",
             (200, s.COMPLETION), s.LLM_ERRORS, s.CHAT_REQUEST, family="openai", hot=True),
    ApiRoute(POST, "/v1/completions", llm.completions, "llm", "A text completion through a configured route",
             (200, s.COMPLETION), s.LLM_ERRORS, s.COMPLETION_REQUEST, family="openai", hot=True),
    ApiRoute(POST, "/v1/embeddings", llm.embeddings, "llm", "Embeddings through a configured route",
             (200, s.EMBEDDINGS), s.LLM_ERRORS, s.EMBEDDING_REQUEST, family="openai", hot=True),
    ApiRoute(POST, "/v1/responses", llm.responses, "llm", "A response (OpenAI's Responses API) through a route",
             (200, s.RESPONSE), s.RESPONSES_ERRORS, s.RESPONSES_REQUEST, family="openai", hot=True),
    ApiRoute(POST, "/v1/responses/input_tokens", llm.responses_input_tokens, "llm",
             "Count a Responses API request's input tokens through a configured route",
             (200, s.INPUT_TOKENS), s.LLM_ERRORS, s.RESPONSES_REQUEST, family="openai"),
    ApiRoute(GET, "/v1/responses/{response_id}", llm.retrieve_response, "llm",
             "A stored response, from the target that created it", (200, s.RESPONSE), s.FOLLOW_UP_ERRORS,
             query=(Param("stream", "Replay the response's events", {"type": "boolean"}),
                    Param("include[]", "Extra output to include", repeated=True),
                    Param("starting_after", "Replay the events after this sequence number", {"type": "integer"})),
             family="openai"),
    ApiRoute(DELETE, "/v1/responses/{response_id}", llm.delete_response, "llm",
             "Delete a stored response at the target that created it", (200, s.json_body(s.OBJECT)), s.FOLLOW_UP_ERRORS,
             family="openai"),
    ApiRoute(POST, "/v1/responses/{response_id}/cancel", llm.cancel_response, "llm",
             "Cancel a background response at the target that created it", (200, s.RESPONSE), s.FOLLOW_UP_ERRORS,
             family="openai"),
    ApiRoute(GET, "/v1/responses/{response_id}/input_items", llm.response_input_items, "llm",
             "The input items of a stored response, from the target that created it", (200, s.ITEM_LIST),
             s.FOLLOW_UP_ERRORS,
             query=(Param("after", "An item id to list after"), Param("limit", "Page size", {"type": "integer"}),
                    Param("order", "asc or desc"), Param("include[]", "Extra fields to include", repeated=True)),
             family="openai"),
    ApiRoute(POST, "/v1/messages", llm.messages, "llm", "A message (Anthropic's Messages API) through a route of "
             "provider anthropic", (200, s.MESSAGE), s.MESSAGES_ERRORS, s.MESSAGES_REQUEST, family="anthropic",
             hot=True),
    ApiRoute(POST, "/v1/messages/count_tokens", llm.count_tokens, "llm",
             "Count a Messages API request's input tokens through a route of provider anthropic",
             (200, s.TOKEN_COUNT), s.MESSAGES_ERRORS, s.MESSAGES_REQUEST, family="anthropic"),
    ApiRoute(GET, "/v1/models", llm.models, "llm", "The configured routes, as OpenAI's model list",
             (200, s.MODEL_LIST), {401: "No valid gateway key (when auth.keys is set)"},
             family="openai"),
)  # fmt: skip

REGISTRY = (
    ApiRoute(POST, "/api/registry/models", registry.create_model, "registry:write", "Create a registered model",
             (201, s.json_body(s.REGISTERED_MODEL)), {400: "Bad name or field", 409: "Exists", **_STORE},
             s.CREATE_MODEL),
    ApiRoute(GET, "/api/registry/models", registry.list_models, "registry:read", "List registered models",
             (200, s.json_body(s.obj(("models",), models={"type": "array", "items": s.REGISTERED_MODEL}))), _STORE),
    ApiRoute(GET, "/api/registry/models/{name}", registry.get_model, "registry:read",
             "A registered model with its versions or, for NAME@ALIAS, the version the alias names",
             (200, s.json_body(s.OBJECT)), {400: "Bad name or reference", **_NOT_FOUND, **_STORE}),
    ApiRoute(POST, "/api/registry/models/{name}/versions", registry.create_version, "registry:write",
             "Register a version from a package path",
             (201, s.json_body(s.MODEL_VERSION)), {400: "Bad package or field", 404: "No such model", **_STORE},
             s.CREATE_VERSION),
    ApiRoute(GET, "/api/registry/models/{name}/versions", registry.list_versions, "registry:read", "List versions",
             (200, s.json_body(s.obj(("versions",), versions={"type": "array", "items": s.MODEL_VERSION}))),
             {400: "Bad name", **_NOT_FOUND, **_STORE}),
    ApiRoute(GET, "/api/registry/models/{name}/versions/{version}", registry.get_version, "registry:read",
             "A model version", (200, s.json_body(s.MODEL_VERSION)),
             {400: "Bad name or version", **_NOT_FOUND, **_STORE}),
    ApiRoute(PUT, "/api/registry/models/{name}/aliases/{alias}", registry.set_alias, "registry:write",
             "Point an alias at a version", (200, s.ALIAS),
             {400: "Reserved or bad alias, or bad version", 404: "No such version", **_STORE}, s.SET_ALIAS),
    ApiRoute(DELETE, "/api/registry/models/{name}/aliases/{alias}", registry.delete_alias, "registry:write",
             "Delete an alias", (204, None), {400: "Bad name", 404: "No such alias", **_STORE}),
)  # fmt: skip

# MLflow's model-registry REST API over the same registries (gateway/api/mlflow_registry.py): what
# MlflowClient(registry_uri=...) and mlflow.genai.register_prompt / load_prompt call. A call that reaches a
# prompt needs prompts:read / prompts:write too. Any other /api/2.0/mlflow path: 404 ENDPOINT_NOT_FOUND.
_M = mlflow.PREFIX
_MLFLOW_READ = {
    400: "Missing or bad field (INVALID_PARAMETER_VALUE), or a body nested deeper than http.max_json_depth",
    404: "No such model, prompt, version or alias (RESOURCE_DOES_NOT_EXIST)",
    # a GET without a query string reads its fields from a JSON body, as MLflow's server does
    413: "Body larger than http.max_json_body_bytes",
    415: "Content-Type other than application/json",
    **_STORE,
}
_MLFLOW_WRITE = {**_MLFLOW_READ, 400: "Missing or bad field, or a change refused (INVALID_PARAMETER_VALUE)"}
_NAME, _VERSION = Param("name", "Registered model (or prompt) name"), Param("version", "Version number")
_ALIAS = Param("alias", "Alias name (latest: the highest version)")
_SEARCH = (
    Param("filter", "MLflow's filter: name = 'x', name LIKE 'x%', tags.k = 'v', ... joined by AND"),
    Param("max_results", "Page size", {"type": "integer", "minimum": 1}),
    Param(
        "order_by", "name, creation_timestamp, last_updated_timestamp (and version_number) [ASC|DESC]", repeated=True
    ),
    Param("page_token", "The previous page's next_page_token"),
)
MLFLOW = (
    ApiRoute(POST, f"{_M}/registered-models/create", mlflow.create_registered_model, "registry:write",
             "MLflow: create a registered model (a prompt when tagged mlflow.prompt.is_prompt)", (200, s.MLFLOW_RM),
             {**_MLFLOW_WRITE, 400: "Bad field, or the name exists (RESOURCE_ALREADY_EXISTS)"},
             s.mlflow_request("name", "description tags")),
    ApiRoute(GET, f"{_M}/registered-models/get", mlflow.get_registered_model, "registry:read",
             "MLflow: a registered model", (200, s.MLFLOW_RM), _MLFLOW_READ, query=(_NAME,)),
    ApiRoute(GET, f"{_M}/registered-models/search", mlflow.search_registered_models, "registry:read",
             "MLflow: search registered models", (200, s.MLFLOW_RMS), _MLFLOW_READ, query=_SEARCH),
    ApiRoute(PATCH, f"{_M}/registered-models/update", mlflow.update_registered_model, "registry:write",
             "MLflow: change a registered model's description", (200, s.MLFLOW_RM), _MLFLOW_WRITE,
             s.mlflow_request("name", "description")),
    ApiRoute(DELETE, f"{_M}/registered-models/delete", mlflow.delete_registered_model, "registry:write",
             "MLflow: delete a registered model with its versions and aliases", (200, s.MLFLOW_EMPTY),
             _MLFLOW_WRITE, s.mlflow_request("name")),
    ApiRoute(POST, f"{_M}/registered-models/set-tag", mlflow.set_registered_model_tag, "registry:write",
             "MLflow: set a registered model's tag", (200, s.MLFLOW_EMPTY), _MLFLOW_WRITE,
             s.mlflow_request("name key", "value")),
    ApiRoute(DELETE, f"{_M}/registered-models/delete-tag", mlflow.delete_registered_model_tag, "registry:write",
             "MLflow: delete a registered model's tag", (200, s.MLFLOW_EMPTY), _MLFLOW_WRITE,
             s.mlflow_request("name key")),
    ApiRoute(("GET", "POST"), f"{_M}/registered-models/get-latest-versions", mlflow.get_latest_versions,
             "registry:read", "MLflow: the latest version (every version is in stage None)", (200, s.MLFLOW_MVS),
             _MLFLOW_READ, query=(_NAME, Param("stages", "Stages (only None has versions)", repeated=True))),
    ApiRoute(POST, f"{_M}/registered-models/alias", mlflow.set_alias, "registry:write",
             "MLflow: point an alias at a version", (200, s.MLFLOW_EMPTY), _MLFLOW_WRITE,
             s.mlflow_request("name alias version")),
    ApiRoute(DELETE, f"{_M}/registered-models/alias", mlflow.delete_alias, "registry:write",
             "MLflow: delete an alias", (200, s.MLFLOW_EMPTY), _MLFLOW_WRITE, s.mlflow_request("name alias")),
    ApiRoute(GET, f"{_M}/registered-models/alias", mlflow.get_model_version_by_alias, "registry:read",
             "MLflow: the version an alias names", (200, s.MLFLOW_MV), _MLFLOW_READ, query=(_NAME, _ALIAS)),
    ApiRoute(POST, f"{_M}/model-versions/create", mlflow.create_model_version, "registry:write",
             "MLflow: register a version from a model package under an artifact root (or a prompt version)",
             (200, s.MLFLOW_MV), _MLFLOW_WRITE,
             s.mlflow_request("name source", "description tags run_id run_link model_id")),
    ApiRoute(GET, f"{_M}/model-versions/get", mlflow.get_model_version, "registry:read",
             "MLflow: a model version", (200, s.MLFLOW_MV), _MLFLOW_READ, query=(_NAME, _VERSION)),
    ApiRoute(GET, f"{_M}/model-versions/search", mlflow.search_model_versions, "registry:read",
             "MLflow: search model versions", (200, s.MLFLOW_MVS), _MLFLOW_READ, query=_SEARCH),
    ApiRoute(PATCH, f"{_M}/model-versions/update", mlflow.update_model_version, "registry:write",
             "MLflow: change a model version's description", (200, s.MLFLOW_MV), _MLFLOW_WRITE,
             s.mlflow_request("name version", "description")),
    ApiRoute(DELETE, f"{_M}/model-versions/delete", mlflow.delete_model_version, "registry:write",
             "MLflow: delete a model version and its aliases (its number is not reused)", (200, s.MLFLOW_EMPTY),
             _MLFLOW_WRITE, s.mlflow_request("name version")),
    ApiRoute(POST, f"{_M}/model-versions/set-tag", mlflow.set_model_version_tag, "registry:write",
             "MLflow: set a model version's tag", (200, s.MLFLOW_EMPTY), _MLFLOW_WRITE,
             s.mlflow_request("name version key", "value")),
    ApiRoute(DELETE, f"{_M}/model-versions/delete-tag", mlflow.delete_model_version_tag, "registry:write",
             "MLflow: delete a model version's tag", (200, s.MLFLOW_EMPTY), _MLFLOW_WRITE,
             s.mlflow_request("name version key")),
    ApiRoute(GET, f"{_M}/model-versions/get-download-uri", mlflow.get_download_uri, "registry:read",
             "MLflow: where a version's package is (its source)", (200, s.MLFLOW_DOWNLOAD_URI), _MLFLOW_READ,
             query=(_NAME, _VERSION)),
)  # fmt: skip

OPERATIONS = (
    ApiRoute(GET, "/ping", ops.ping, None, "Liveness (a newline, as MLflow's scoring server answers)",
             (200, None)),
    ApiRoute(GET, "/health", ops.health, None, "Readiness: 200 once every preloaded model is loaded",
             (200, s.HEALTH), {503: "Not yet: the body says what is loading or failed (Retry-After)"},
             error_bodies={503: s.HEALTH}),
    ApiRoute(GET, "/version", ops.version, None, "Versions of the gateway and its runtimes", (200, s.VERSION)),
    ApiRoute(GET, "/models", ops.models, "invoke", "Loaded models, their versions, aliases and signatures",
             (200, s.LOADED_MODELS)),
    ApiRoute(GET, "/metrics", ops.prometheus_metrics, "metrics", "Prometheus metrics, summed over every worker",
             (200, s.PROMETHEUS_TEXT)),
    ApiRoute(GET, "/openapi.json", ops.openapi, "admin", "This document", (200, s.OPENAPI)),
)  # fmt: skip

TRACES = (
    ApiRoute(GET, "/api/traces", traces.search_traces, "traces:read", "Search LLM call summaries, newest first",
             (200, s.TRACES), {400: "Bad filter", 503: "The trace store is unavailable"},
             query=(Param("route", "LLM route name"), Param("model", "Request or response model"),
                    Param("key", "A gateway key's id or name"),
                    Param("status", "ok, error or an HTTP status code"), Param("prompt_name", "Linked prompt"),
                    Param("prompt_version", "Linked prompt version", {"type": "integer", "minimum": 1}),
                    Param("from", "Epoch ms or ISO 8601 (inclusive)"), Param("to", "Epoch ms or ISO 8601 (exclusive)"),
                    Param("assessment", "Traces with an assessment of this name"),
                    Param("assessment_value", "An assessment whose label or JSON value is this (yes, true, good...)"),
                    Param("min_score", "An assessment scored at least this", {"type": "number"}),
                    Param("max_score", "An assessment scored at most this", {"type": "number"}),
                    Param("limit", "Page size", {"type": "integer", "minimum": 1, "maximum": traces.MAX_LIMIT}),
                    Param("page_token", "The previous page's next_page_token"))),
    ApiRoute(GET, "/api/usage", traces.usage, "traces:read",
             "Requests, tokens and cost of LLM calls (sums over the summaries /api/traces lists for the same filter)",
             (200, s.USAGE), {400: "Bad filter or group_by", 503: "The trace store is unavailable"},
             query=(Param("key", "A gateway key's id or name"), Param("route", "LLM route name"),
                    Param("model", "Request or response model"),
                    Param("from", "Epoch ms or ISO 8601 (inclusive)"), Param("to", "Epoch ms or ISO 8601 (exclusive)"),
                    Param("group_by", "day (UTC), key, model or route",
                          {"type": "string", "enum": ["day", "key", "model", "route"]}))),
    ApiRoute(GET, "/api/traces/{trace_id}", traces.get_trace, "traces:read", "The summaries and assessments of a trace",
             (200, s.TRACE), {400: "Not a trace id", 404: "Unknown trace", 503: "The trace store is unavailable"}),
    ApiRoute(POST, "/api/traces/{trace_id}/assessments", traces.record_feedback, "evaluations",
             "Record human feedback on a trace (the same source_id again replaces its label)",
             (201, s.json_body(s.ASSESSMENT)),
             {400: "Not a trace id, or a bad field", 404: "Unknown trace", 503: "The trace store is unavailable"},
             s.FEEDBACK),
)  # fmt: skip


_KEY_ERRORS = {400: "Bad key id or name", 404: "No such key", 503: "The store is unavailable"}
KEYS = (
    ApiRoute(POST, "/api/keys", keys.create, "admin", "Create a gateway key (answered once, under key)",
             (201, s.NEW_GATEWAY_KEY), {400: "A bad field (named)", 409: "The name is taken", 415: "Not JSON",
                                        503: "The store is unavailable"}, s.CREATE_KEY),
    ApiRoute(GET, "/api/keys", keys.list_keys, "admin", "Every gateway key (never the keys themselves)",
             (200, s.GATEWAY_KEYS), {503: "The store is unavailable"}),
    ApiRoute(GET, "/api/keys/{key}", keys.get_key, "admin", "A gateway key by id or name",
             (200, s.json_body(s.GATEWAY_KEY)), _KEY_ERRORS),
    ApiRoute(POST, "/api/keys/{key}/revoke", keys.revoke, "admin", "Revoke a key: refused on every replica",
             (200, s.json_body(s.GATEWAY_KEY)), {**_KEY_ERRORS, 415: "Not JSON"}),
    ApiRoute(POST, "/api/keys/{key}/rotate", keys.rotate, "admin",
             "A new secret for a key (answered once, under key); the old one stops working",
             (200, s.NEW_GATEWAY_KEY), {**_KEY_ERRORS, 415: "Not JSON"}),
)  # fmt: skip


def app_table(*features: Sequence[ApiRoute]) -> tuple[ApiRoute, ...]:
    """The app's table, in Starlette's matching order: scoring, then the feature packages' routes (the
    prompt registry, composed by gateway.app, which alone may import them), then the rest."""
    return (
        *SCORING, *(route for feature in features for route in feature), *REGISTRY, *MLFLOW, *OPERATIONS, *TRACES,
        *KEYS, *LLM,
    )  # fmt: skip
