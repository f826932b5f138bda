"""Errors of the OpenAI-compatible endpoints: GatewayErrors with OpenAI's ``type`` and ``code``.

The proxy raises them (a missing or bad gateway key is gateway.errors.Unauthenticated, 401
``authentication_error``, raised by gateway/keys.py for every route); the app's one error handler
(``gateway.http.render_error``) answers them in OpenAI's shape, ``{"error": {"message", "type", "code"}}``,
as every GatewayError under ``/v1``.
The official SDK picks its exception class from the status (404 -> NotFoundError, 401 ->
AuthenticationError, 5xx -> InternalServerError), so the status is what matters most; the message
says what was wrong and, for upstream failures, which upstream and what it answered.

ProxyError(message)                500 server_error
 ├── InvalidRequestError           400 invalid_request_error  (also 404 for an unknown model or prompt)
 ├── UpstreamError                 502 upstream_error
 └── UpstreamTimeoutError          504 timeout_error
"""

from __future__ import annotations

from gateway.errors import GatewayError
from gateway.http import openai_error_body

INVALID_REQUEST = "invalid_request_error"
UPSTREAM = "upstream_error"
TIMEOUT = "timeout_error"
SERVER = "server_error"


class ProxyError(GatewayError):
    """An answer of the proxy other than a success. ``code`` is OpenAI's ``code`` (upper-cased, the
    MLflow ``error_code``; by default the class's); ``error_type`` is what the span's ``error.type``
    says (by default the code);
    ``retry_after_s`` becomes a ``Retry-After`` header (whole seconds, at least 1)."""

    openai_type = SERVER
    # Set by LlmProxy.complete on the error it raises: the failed call's own trace and its attempts.
    trace_id: str | None = None
    attempts: int | None = None

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        error_type: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message, status=status, error_code=code.upper() if code else None)
        self.error_type = error_type or self.openai_code
        self.retry_after_s = retry_after_s


class InvalidRequestError(ProxyError):
    status = 400
    error_code = "INVALID_REQUEST"
    openai_type = INVALID_REQUEST


class UpstreamError(ProxyError):
    status = 502
    error_code = "UPSTREAM_ERROR"
    openai_type = UPSTREAM


class UpstreamTimeoutError(ProxyError):
    status = 504
    error_code = "UPSTREAM_TIMEOUT"
    openai_type = TIMEOUT


def from_gateway_error(exc: GatewayError) -> ProxyError:
    """A GatewayError raised by a collaborator (the prompt renderer) as the proxy's, status kept."""
    if exc.status == 404:
        return InvalidRequestError(exc.message, status=404, code="prompt_not_found")
    if 400 <= exc.status < 500:
        return InvalidRequestError(exc.message, status=exc.status, code=exc.openai_code)
    return ProxyError(exc.message, status=exc.status, code=exc.openai_code)


def sse_error_event(error: GatewayError) -> bytes:
    """The one event that ends a stream which failed after its first byte reached the client."""
    return b"data: " + openai_error_body(error) + b"\n\n"
