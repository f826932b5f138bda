"""HTTP helpers shared by every endpoint module: orjson responses, error bodies, body limits.

Every body is read through ``read_raw_body`` (``read_body``, ``read_json_object``), which refuses one over its
limit with a 413 naming the setting and its value: a ``Content-Length`` over the limit before any of it is read,
a chunked body as soon as it passes the limit. The admin APIs read JSON objects through ``read_json_object``,
which takes its limits from ``JsonLimits`` (``http.max_json_body_bytes``, ``http.max_evaluation_body_bytes``,
``http.max_json_depth``), set on the app by ``gateway.app.create_app``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive

from gateway.config import HttpSettings
from gateway.errors import GatewayError
from gateway.json_depth import check_json_depth

JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


class ORJSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=JSON_OPTIONS)


class RawJSONResponse(Response):
    """A 200 JSON answer from bytes already dumped, with headers already encoded (the hot path)."""

    media_type = "application/json"

    def __init__(self, body: bytes, raw_headers: list[tuple[bytes, bytes]]) -> None:
        self.status_code = 200
        self.background = None
        self.body = body
        self.raw_headers = [
            (b"content-length", str(len(body)).encode()),
            (b"content-type", b"application/json"),
            *raw_headers,
        ]


class PayloadTooLarge(GatewayError):
    status = 413
    error_code = "REQUEST_LIMIT_EXCEEDED"


# The shape of an error body: MLflow's (scoring, registry, prompts, traces, ops), OpenAI's (/v1) or Anthropic's
# (/v1/messages); each route of the table names its own (gateway/api/routing.py, route_family).
ErrorFamily = Literal["mlflow", "openai", "anthropic"]

# Anthropic's error types by status (its API's documented list); another 4xx is invalid_request_error, another
# 5xx api_error.
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def render_error(exc: GatewayError, family: ErrorFamily) -> Response:
    """The one answer to a GatewayError: its status, headers and body in the shape of ``family``."""
    if family == "openai" or family == "anthropic":
        body = openai_error_body(exc) if family == "openai" else anthropic_error_body(exc)
        return Response(
            body, status_code=exc.status, headers=_error_headers(exc, None), media_type="application/json",
        )  # fmt: skip
    return error_response(exc)


def error_response(exc: GatewayError, headers: dict[str, str] | None = None) -> ORJSONResponse:
    """MLflow's error body: ``{"error_code": ..., "message": ...}`` with the error's status; ``headers``
    (a model version's ``X-Model-*``) come first, then the error's own."""
    return ORJSONResponse(
        {"error_code": exc.error_code, "message": exc.message}, status_code=exc.status,
        headers=_error_headers(exc, headers),
    )  # fmt: skip


def openai_error_body(exc: GatewayError) -> bytes:
    """OpenAI's error body: ``{"error": {"message": ..., "type": ..., "code": ...}}``."""
    return orjson.dumps({"error": {"message": exc.message, "type": exc.openai_type, "code": exc.openai_code}})


def anthropic_error_type(status: int) -> str:
    return _ANTHROPIC_TYPES.get(status) or ("invalid_request_error" if status < 500 else "api_error")


def anthropic_error_body(exc: GatewayError) -> bytes:
    """Anthropic's error body: ``{"type": "error", "error": {"type": ..., "message": ...}}``."""
    return orjson.dumps({"type": "error", "error": {"type": anthropic_error_type(exc.status), "message": exc.message}})


def _error_headers(exc: GatewayError, headers: dict[str, str] | None) -> dict[str, str]:
    all_headers = dict(headers or {})
    if exc.headers:
        all_headers.update(exc.headers)
    retry_after = exc.retry_after_s
    if retry_after is not None:  # whole seconds, at least one
        all_headers["Retry-After"] = str(max(1, round(retry_after)))
    return all_headers


@dataclass(frozen=True, slots=True)
class BodyLimit:
    """The most bytes a body may hold, and the setting that says so (named in the 413)."""

    setting: str
    max_bytes: int


@dataclass(frozen=True, slots=True)
class JsonLimits:
    """What ``read_json_object`` accepts: ``body`` for every admin API, ``evaluation`` for a run's data set."""

    body: BodyLimit
    evaluation: BodyLimit
    max_depth: int

    @classmethod
    def from_settings(cls, http: HttpSettings) -> JsonLimits:
        return cls(
            BodyLimit("http.max_json_body_bytes", http.max_json_body_bytes),
            BodyLimit("http.max_evaluation_body_bytes", http.max_evaluation_body_bytes),
            http.max_json_depth,
        )


DEFAULT_JSON_LIMITS: Final = JsonLimits.from_settings(HttpSettings())


def json_limits(request: Request) -> JsonLimits:
    """The app's ``JsonLimits`` (``app.state.json_limits``; the defaults for an app built otherwise)."""
    limits: JsonLimits = getattr(request.app.state, "json_limits", DEFAULT_JSON_LIMITS)
    return limits


async def read_body(request: Request, limit: BodyLimit) -> bytes:
    """The request body, refusing (413) one larger than ``limit`` before reading it all."""
    declared = request.headers.get("content-length")
    return await read_raw_body(request.receive, None if declared is None else declared.encode("latin-1"), limit)


async def read_raw_body(receive: Receive, declared: bytes | None, limit: BodyLimit) -> bytes:
    """``read_body`` from the ASGI ``receive`` and the raw ``Content-Length`` value (the hot path:
    a small body arrives in one message, returned as it is)."""
    max_bytes = limit.max_bytes
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(
            f"Request body of {declared.decode('latin-1')} bytes exceeds {limit.setting} ({max_bytes} bytes)."
        )
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(f"Request body exceeds {limit.setting} ({max_bytes} bytes).")
        if not message.get("more_body", False):
            if not chunks:
                return chunk
            chunks.append(chunk)
            return b"".join(chunks)
        chunks.append(chunk)


async def read_json_object(request: Request, limit: BodyLimit | None = None) -> dict[str, Any]:
    """A JSON object body for the admin APIs; a BAD_REQUEST naming the problem otherwise.

    ``limit`` is the app's ``http.max_json_body_bytes`` unless given (an evaluation's data set:
    ``json_limits(request).evaluation``); a body nested deeper than ``http.max_json_depth`` is refused
    before it is parsed.

    A ``Content-Type`` other than ``application/json`` is refused (415) before the body is read: a web
    page may send any site a POST with ``text/plain``, ``application/x-www-form-urlencoded`` or
    ``multipart/form-data`` without asking first (no CORS preflight), so a write endpoint that took
    such a body as JSON could be driven by any page its user opens. Without the header, JSON is assumed
    (browsers always send one)."""
    from gateway.errors import BadRequest, UnsupportedMediaType

    content_type = request.headers.get("content-type")
    if content_type is not None and not _is_json(content_type):
        raise UnsupportedMediaType(
            f"Content-Type must be application/json for {request.method} {request.url.path}, "
            f"got {content_type[:100]!r}."
        )
    limits = json_limits(request)
    body = await read_body(request, limit or limits.body)
    if not body:
        return {}
    check_json_depth(body, limits.max_depth)
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"Request body is not valid JSON: {exc}.") from None
    if not isinstance(data, dict):
        raise BadRequest(f"Request body must be a JSON object, got {type(data).__name__}.")
    return data


def _is_json(content_type: str) -> bool:
    """``application/json`` with at most a UTF-8 ``charset`` parameter (JSON is UTF-8, RFC 8259)."""
    mime, _, parameters = content_type.partition(";")
    if mime.strip().lower() != "application/json":
        return False
    parameters = parameters.strip().lower().replace(" ", "")
    return parameters in ("", "charset=utf-8", 'charset="utf-8"')
