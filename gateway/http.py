"""HTTP helpers shared by every endpoint module: orjson responses, error bodies, body limits."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive

from gateway.errors import GatewayError

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


def error_response(exc: GatewayError, headers: dict[str, str] | None = None) -> ORJSONResponse:
    """MLflow's error body: ``{"error_code": ..., "message": ...}`` with the error's status."""
    all_headers = dict(headers or {})
    retry_after = getattr(exc, "retry_after_s", None)
    if retry_after is not None:
        all_headers["Retry-After"] = str(retry_after)
    return ORJSONResponse(
        {"error_code": exc.error_code, "message": exc.message}, status_code=exc.status, headers=all_headers
    )


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The request body, refusing (413) one larger than ``max_bytes`` before reading it all."""
    declared = request.headers.get("content-length")
    return await read_raw_body(request.receive, None if declared is None else declared.encode("latin-1"), max_bytes)


async def read_raw_body(receive: Receive, declared: bytes | None, max_bytes: int) -> bytes:
    """``read_body`` from the ASGI ``receive`` and the raw ``Content-Length`` value (the hot path:
    a small body arrives in one message, returned as it is)."""
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(
            f"Request body of {declared.decode('latin-1')} bytes exceeds the limit of {max_bytes} bytes."
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
            raise PayloadTooLarge(f"Request body exceeds the limit of {max_bytes} bytes.")
        if not message.get("more_body", False):
            if not chunks:
                return chunk
            chunks.append(chunk)
            return b"".join(chunks)
        chunks.append(chunk)


async def read_json_object(request: Request, max_bytes: int = 10 * 1024 * 1024) -> dict[str, Any]:
    """A JSON object body for the admin APIs; a BAD_REQUEST naming the problem otherwise."""
    from gateway.errors import BadRequest

    body = await read_body(request, max_bytes)
    if not body:
        return {}
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"Request body is not valid JSON: {exc}.") from None
    if not isinstance(data, dict):
        raise BadRequest(f"Request body must be a JSON object, got {type(data).__name__}.")
    return data
