"""The OpenAPI 3.1 document served at /openapi.json, generated from the route table (gateway/api/routes.py).

Every entry gives one operation per method: its summary, path parameters, query parameters and headers,
request body, success answer, and its error answers with the error body of the route's family (MLflow's
``{"error_code", "message"}``, OpenAI's ``{"error": {"message", "type", "code"}}`` for ``/v1``, or Anthropic's
``{"type": "error", "error": {"type", "message"}}`` for ``/v1/messages``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from gateway import __version__
from gateway.api.routing import ApiRoute, Content
from gateway.api.schemas import ANTHROPIC_ERROR, MLFLOW_ERROR, OPENAI_ERROR
from gateway.http import ErrorFamily
from gateway.refs import MAX_VERSION

_ERROR_SCHEMAS: dict[ErrorFamily, tuple[str, dict[str, Any]]] = {
    "mlflow": ("MlflowError", dict(MLFLOW_ERROR)),
    "openai": ("OpenAIError", dict(OPENAI_ERROR)),
    "anthropic": ("AnthropicError", dict(ANTHROPIC_ERROR)),
}
_PATH_PARAM = re.compile(r"{([^}:]+)(?::[^}]+)?}")
_STATUS_TEXT = {200: "OK", 201: "Created", 202: "Accepted", 204: "No content", 304: "Not modified (If-None-Match)"}
_INTERNAL = "Internal error: a bug (the gateway logs it)"
_ROUTING_ERRORS = {
    "404": "No endpoint at this path (ENDPOINT_NOT_FOUND)",
    "405": "Method not allowed on this path (METHOD_NOT_ALLOWED)",
}

# Path parameters that are not plain strings: a model version is a 64-bit whole number (gateway/refs.py).
_PATH_SCHEMAS: dict[str, dict[str, Any]] = {"version": {"type": "integer", "minimum": 1, "maximum": MAX_VERSION}}


def openapi_document(table: Sequence[ApiRoute]) -> dict[str, Any]:
    """The document for ``table``: every entry, every method, nothing else."""
    paths: dict[str, dict[str, Any]] = {}
    for entry in table:
        item = paths.setdefault(entry.path, {})
        for method in entry.methods:
            item[method.lower()] = _operation(entry, method, several=len(entry.methods) > 1)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "gateway",
            "version": __version__,
            "description": "MLflow-format model serving, an OpenAI-compatible LLM proxy, and registries for "
            "models, prompts and traces. A path or method not listed here is answered "
            + "; ".join(f"{code} ({text})" for code, text in _ROUTING_ERRORS.items())
            + " with an MlflowError body.",
        },
        "paths": paths,
        "components": {
            "schemas": dict(_ERROR_SCHEMAS.values()),
            "securitySchemes": {
                "gatewayKey": {"type": "http", "scheme": "bearer", "description": "A gateway key"},
                "gatewayApiKey": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "x-api-key",
                    "description": "A gateway key, as Anthropic's SDKs send it",
                },
            },  # fmt: skip
        },
    }


_NOT_JSON = "Content-Type other than application/json (a browser's form or text/plain body)"
_TOO_LARGE = "Body larger than http.max_json_body_bytes"
_TOO_DEEP = "Malformed body, or one nested deeper than http.max_json_depth"


def _operation(entry: ApiRoute, method: str, *, several: bool) -> dict[str, Any]:
    endpoint = entry.endpoint
    operation_id = f"{endpoint.__module__}.{endpoint.__name__}" + (f".{method.lower()}" if several else "")
    operation: dict[str, Any] = {"summary": entry.summary, "operationId": operation_id}
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": dict(_PATH_SCHEMAS.get(name, {"type": "string"}))}
        for name in _PATH_PARAM.findall(entry.path)
    ]
    for param in entry.query:
        schema = {"type": "array", "items": dict(param.schema)} if param.repeated else dict(param.schema)
        parameters.append({"name": param.name, "in": "query", "description": param.description, "schema": schema})
    for param in entry.headers:
        parameters.append({"name": param.name, "in": "header", "description": param.description,
                           "schema": dict(param.schema)})  # fmt: skip
    if parameters:
        operation["parameters"] = parameters
    if entry.body is not None:
        operation["requestBody"] = {"required": True, "content": _content(entry.body)}
    responses: dict[str, Any] = {}
    for status, body in sorted({**dict([entry.ok]), **entry.also_ok}.items()):
        if status < 400:
            responses[str(status)] = {"description": _STATUS_TEXT.get(status, "OK")}
            if body is not None:
                responses[str(status)]["content"] = _content(body)
    if any(param.name == "If-None-Match" for param in entry.headers):
        responses["304"] = {"description": _STATUS_TEXT[304]}
    name = _ERROR_SCHEMAS[entry.family][0]
    error_content = {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}
    errors = {**entry.errors, 500: _INTERNAL}
    if entry.family == "mlflow" and entry.body is not None and list(entry.body) == ["application/json"]:
        errors.setdefault(415, _NOT_JSON)  # gateway.http.read_json_object
    if 415 in errors and entry.family == "mlflow":  # read_json_object reads the body: its limits apply
        errors.setdefault(413, _TOO_LARGE)
        errors.setdefault(400, _TOO_DEEP)
    for code, text in sorted(errors.items()):
        own = entry.error_bodies.get(code)
        responses[str(code)] = {"description": text, "content": error_content if own is None else _content(own)}
    operation["responses"] = responses
    if entry.family == "openai":
        operation["security"] = [{"gatewayKey": []}, {}]  # a key when auth.keys is set
    elif entry.family == "anthropic":
        operation["security"] = [{"gatewayApiKey": []}, {"gatewayKey": []}, {}]
    if entry.scope is not None:
        operation["x-gateway-scope"] = entry.scope
    return operation


def _content(content: Content) -> dict[str, Any]:
    return {media_type: dict(media) for media_type, media in content.items()}
