"""The OpenAPI description served at /openapi.json (written by hand: the API is small and stable)."""

from __future__ import annotations

from typing import Any

from gateway import __version__

_ERROR = {"$ref": "#/components/schemas/Error"}
_JSON_ERROR = {"application/json": {"schema": _ERROR}}


def _op(summary: str, responses: dict[str, str], body: dict[str, Any] | None = None) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "responses": {
            code: (
                {"description": text, "content": _JSON_ERROR} if code[0] in "45" else {"description": text}
            )
            for code, text in responses.items()
        },
    }
    if body is not None:
        operation["requestBody"] = {"required": True, "content": body}
    return operation


_SCORING_BODY = {
    "application/json": {
        "schema": {
            "type": "object",
            "description": "Exactly one of dataframe_split, dataframe_records, instances, inputs; optional params.",
            "properties": {
                "dataframe_split": {"type": "object"},
                "dataframe_records": {"type": "array", "items": {"type": "object"}},
                "instances": {},
                "inputs": {},
                "params": {"type": "object"},
            },
        }
    },
    "text/csv": {"schema": {"type": "string"}},
}
_SCORING_RESPONSES = {
    "200": '{"predictions": ...}; headers X-Model-Name and X-Model-Version',
    "400": "Malformed body, schema mismatch, bad params, bad X-Request-Timeout-Ms header, or the model raised",
    "404": "Unknown model, version or alias",
    "413": "Body larger than serving.max_body_bytes",
    "415": "Unsupported content type or charset",
    "503": "The model failed to load, or its queue is full (Retry-After)",
    "504": "DEADLINE_EXCEEDED: the deadline (serving.request_timeout_s or X-Request-Timeout-Ms) passed while queued",
}
_JSON_OBJECT = {"application/json": {"schema": {"type": "object"}}}

OPENAPI_SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "gateway", "version": __version__},
    "paths": {
        "/invocations": {"post": _op("Score with the default model", _SCORING_RESPONSES, _SCORING_BODY)},
        "/models/{name}@{alias}/invocations": {
            "post": _op("Score with the version an alias points at", _SCORING_RESPONSES, _SCORING_BODY)
        },
        "/models/{name}/versions/{version}/invocations": {
            "post": _op("Score with one model version", _SCORING_RESPONSES, _SCORING_BODY)
        },
        "/ping": {"get": _op("Liveness", {"200": "Alive"})},
        "/health": {"get": _op("Readiness", {"200": "Every preloaded model is loaded", "503": "Not yet"})},
        "/version": {"get": _op("Versions of the gateway and its runtimes", {"200": "Versions"})},
        "/models": {"get": _op("Loaded models and their versions", {"200": "Loaded models"})},
        "/metrics": {"get": _op("Prometheus metrics, summed over every worker", {"200": "Text exposition format"})},
        "/api/registry/models": {
            "get": _op("List registered models", {"200": "Models"}),
            "post": _op(
                "Create a registered model",
                {"201": "Created", "400": "Bad name", "409": "Exists"},
                _JSON_OBJECT,
            ),
        },
        "/api/registry/models/{name}": {
            "get": _op(
                "A registered model with its versions (or, for NAME@ALIAS, the version)",
                {"200": "Model", "404": "Not found"},
            )
        },
        "/api/registry/models/{name}/versions": {
            "get": _op("List versions", {"200": "Versions", "404": "Not found"}),
            "post": _op(
                "Register a version from a package path",
                {"201": "Registered", "400": "Bad package", "404": "No such model"},
                _JSON_OBJECT,
            ),
        },
        "/api/registry/models/{name}/versions/{version}": {
            "get": _op("A model version", {"200": "Version", "404": "Not found"})
        },
        "/api/registry/models/{name}/aliases/{alias}": {
            "put": _op(
                "Point an alias at a version",
                {"200": "Set", "400": "Reserved or bad alias", "404": "No such version"},
                _JSON_OBJECT,
            ),
            "delete": _op("Delete an alias", {"204": "Deleted", "404": "No such alias"}),
        },
        "/api/traces": {
            "get": _op(
                "Search LLM call summaries, newest first (query: route, model, status=ok|error|CODE, prompt_name, "
                "prompt_version, from, to (epoch ms or ISO 8601), limit, page_token)",
                {"200": "{traces, next_page_token}", "400": "Bad filter", "503": "Trace store unavailable"},
            )
        },
        "/api/traces/{trace_id}": {
            "get": _op("The summaries of one trace", {"200": "{trace_id, summaries}", "404": "Unknown trace"})
        },
        # Prompt registry (prompts/api.py). GET answers carry an ETag; If-None-Match gives 304.
        "/api/prompts": {
            "get": _op(
                "List prompts by name (query: name_prefix, tag=KEY=VALUE or tag=KEY (repeatable), max_results "
                "(1-1000, default 100), page_token)",
                {"200": "{prompts, next_page_token}", "304": "Not modified", "400": "Bad query parameter"},
            ),
            "post": _op(
                "Create a prompt {name, description?, tags?}",
                {"201": "Created", "400": "Bad name or field", "409": "Exists"},
                _JSON_OBJECT,
            ),
        },
        "/api/prompts/{name}": {
            "get": _op(
                "A prompt with its versions and aliases, or, for NAME@ALIAS (@latest built in), that version",
                {"200": "Prompt or version", "304": "Not modified", "404": "Unknown prompt or alias"},
            ),
            "patch": _op(
                "Change a prompt's description or tags {description?, tags?}",
                {"200": "Updated", "400": "Bad field", "404": "Unknown prompt"},
                _JSON_OBJECT,
            ),
        },
        "/api/prompts/{name}/versions": {
            "get": _op("The prompt's versions", {"200": "{versions}", "304": "Not modified", "404": "Unknown prompt"}),
            "post": _op(
                "Register the next version {template (text or [{role, content}]), commit_message?, tags?, "
                "response_format?, model_config?} -> {name, version, variables, ...}",
                {"201": "Registered", "400": "Bad template or field"},
                _JSON_OBJECT,
            ),
        },
        "/api/prompts/{name}/versions/{version}": {
            "get": _op("A prompt version", {"200": "Version", "304": "Not modified", "404": "Not found"}),
            "put": _op("Refused: versions are immutable", {"405": "Versions are immutable"}),
            "patch": _op("Refused: versions are immutable", {"405": "Versions are immutable"}),
            "delete": _op("Refused: versions are immutable", {"405": "Versions are immutable"}),
        },
        "/api/prompts/{name}/versions/{version}/render": {
            "post": _op(
                "Render a version {variables} -> {name, version, template_type, text | messages, model_config, "
                "response_format}",
                {"200": "Rendered", "400": "Missing variables (all named) or bad body", "404": "Not found"},
                _JSON_OBJECT,
            )
        },
        "/api/prompts/{name}@{alias}/render": {
            "post": _op(
                "Render the version an alias names (@latest built in)",
                {"200": "Rendered", "400": "Missing variables (all named) or bad body", "404": "Not found"},
                _JSON_OBJECT,
            )
        },
        "/api/prompts/{name}/aliases/{alias}": {
            "put": _op(
                "Point an alias at a version {version}",
                {"200": "Set", "400": "Reserved or bad alias", "404": "No such version"},
                _JSON_OBJECT,
            ),
            "delete": _op("Delete an alias", {"204": "Deleted", "404": "No such alias"}),
        },
    },
    "components": {
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error_code", "message"],
                "properties": {"error_code": {"type": "string"}, "message": {"type": "string"}},
            }
        }
    },
}
