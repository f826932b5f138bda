"""Errors of the OpenAI-compatible endpoints, in OpenAI's shape: ``{"error": {"message", "type", "code"}}``.

The official SDK picks its exception class from the status (404 -> NotFoundError, 401 ->
AuthenticationError, 5xx -> InternalServerError), so the status is what matters most; the message
says what was wrong and, for upstream failures, which upstream and what it answered.
"""

from __future__ import annotations

import orjson
from starlette.responses import Response

from gateway.errors import GatewayError

INVALID_REQUEST = "invalid_request_error"
AUTHENTICATION = "authentication_error"
UPSTREAM = "upstream_error"
TIMEOUT = "timeout_error"
SERVER = "server_error"


class ProxyError(Exception):
    """An answer of the proxy other than a success, with what the span's ``error.type`` should say."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str,
        code: str | None = None,
        error_type: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.error_type = error_type or code or str(status)
        self.retry_after_s = retry_after_s

    def body(self) -> bytes:
        return orjson.dumps({"error": {"message": self.message, "type": self.type, "code": self.code}})

    def response(self) -> Response:
        headers = {}
        if self.retry_after_s is not None:
            headers["Retry-After"] = str(max(1, round(self.retry_after_s)))
        return Response(self.body(), status_code=self.status, media_type="application/json", headers=headers)


def bad_request(message: str, code: str | None = "invalid_request") -> ProxyError:
    return ProxyError(400, message, type=INVALID_REQUEST, code=code)


def from_gateway_error(exc: GatewayError) -> ProxyError:
    """A GatewayError raised by a collaborator (the prompt renderer) in OpenAI's shape, status kept."""
    if exc.status == 404:
        return ProxyError(404, exc.message, type=INVALID_REQUEST, code="prompt_not_found")
    if 400 <= exc.status < 500:
        return ProxyError(exc.status, exc.message, type=INVALID_REQUEST, code=exc.error_code.lower())
    return ProxyError(exc.status, exc.message, type=SERVER, code=exc.error_code.lower())


def sse_error_event(error: ProxyError) -> bytes:
    """The one event that ends a stream which failed after its first byte reached the client."""
    return b"data: " + error.body() + b"\n\n"
