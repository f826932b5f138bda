"""Errors that carry their HTTP answer: status, MLflow error code, message and OpenAI ``type``/``code``.

Endpoints raise these; one renderer (``gateway.http.render_error``) writes the body in the shape of
the route family: MLflow's ``{"error_code", "message"}``, or OpenAI's ``{"error": {"message", "type",
"code"}}`` under ``/v1`` (where ``type`` follows the status and ``code`` is the error code in lower
case, unless a subclass says otherwise: see gateway/llm/errors.py).

GatewayError(message)                  500 INTERNAL_ERROR
 ├── BadRequest                        400 BAD_REQUEST
 ├── InvalidParameter                  400 INVALID_PARAMETER_VALUE
 │    └── InvalidPackage               400 INVALID_PARAMETER_VALUE  (a model package that cannot be served)
 ├── ModelPredictError                 400 BAD_REQUEST              (the model raised; MLflow answers 400 too)
 ├── Unauthenticated                   401 UNAUTHENTICATED          (no valid gateway key; OpenAI code: why)
 ├── PermissionDenied                  403 PERMISSION_DENIED        (the key lacks the route's scope)
 ├── NotFound                          404 RESOURCE_DOES_NOT_EXIST
 ├── AlreadyExists                     409 RESOURCE_ALREADY_EXISTS
 ├── UnsupportedMediaType              415 UNSUPPORTED_MEDIA_TYPE
 ├── RateLimited                       429 RATE_LIMIT_EXCEEDED      (a key's requests or tokens per minute)
 ├── QuotaExceeded                     429 INSUFFICIENT_QUOTA       (a key's budget for the period is spent)
 ├── ServiceUnavailable                503 TEMPORARILY_UNAVAILABLE  (carries retry_after_s)
 │    └── DependencyError              503 TEMPORARILY_UNAVAILABLE  (a dependency failed: names which)
 └── DeadlineExceeded                  504 DEADLINE_EXCEEDED        (a request's deadline passed before it ran)

This module imports nothing of ours, so every layer can raise these.
"""

from __future__ import annotations

from collections.abc import Mapping


class GatewayError(Exception):
    """Base class: ``status`` and ``error_code`` decide the HTTP answer, ``message`` is shown to the client;
    ``retry_after_s`` (a ``Retry-After`` header) and ``headers`` go with it when set."""

    status: int = 500
    error_code: str = "INTERNAL_ERROR"
    retry_after_s: float | None = None
    headers: Mapping[str, str] | None = None  # sent with the error (before Retry-After)

    def __init__(self, message: str, *, status: int | None = None, error_code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if error_code is not None:
            self.error_code = error_code

    def __str__(self) -> str:
        return self.message

    @property
    def openai_type(self) -> str:
        """OpenAI's error ``type`` (the ``/v1`` routes): the client's error below 500, else the server's."""
        return "invalid_request_error" if self.status < 500 else "server_error"

    @property
    def openai_code(self) -> str:
        """OpenAI's error ``code`` (the ``/v1`` routes): the error code in lower case."""
        return self.error_code.lower()


class BadRequest(GatewayError):
    status = 400
    error_code = "BAD_REQUEST"


class InvalidParameter(GatewayError):
    status = 400
    error_code = "INVALID_PARAMETER_VALUE"


class InvalidPackage(InvalidParameter):
    """A model package that cannot be registered or loaded; the message says what is wrong and where."""


class ModelPredictError(GatewayError):
    """The model itself raised while predicting (MLflow answers these with 400 BAD_REQUEST)."""

    status = 400
    error_code = "BAD_REQUEST"


class Unauthenticated(GatewayError):
    """No valid gateway key. ``reason`` is OpenAI's ``code`` under /v1: ``missing_api_key`` or ``invalid_api_key``."""

    status = 401
    error_code = "UNAUTHENTICATED"
    openai_type = "authentication_error"  # a constant where the base computes it

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason

    @property
    def openai_code(self) -> str:
        return self.reason


class PermissionDenied(GatewayError):
    """A valid key without the scope the route requires (the message names it)."""

    status = 403
    error_code = "PERMISSION_DENIED"
    openai_type = "permission_error"


class NotFound(GatewayError):
    status = 404
    error_code = "RESOURCE_DOES_NOT_EXIST"


class AlreadyExists(GatewayError):
    status = 409
    error_code = "RESOURCE_ALREADY_EXISTS"


class UnsupportedMediaType(GatewayError):
    status = 415
    error_code = "UNSUPPORTED_MEDIA_TYPE"


class RateLimited(GatewayError):
    """A key's requests (``limit_type="requests"``) or tokens (``"tokens"``) per minute are used up: OpenAI's
    ``{"type": "requests" | "tokens", "code": "rate_limit_exceeded"}``, with Retry-After."""

    status = 429
    error_code = "RATE_LIMIT_EXCEEDED"

    def __init__(
        self, message: str, *, limit_type: str, retry_after_s: float, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.limit_type = limit_type
        self.retry_after_s = retry_after_s
        self.headers = headers

    @property
    def openai_type(self) -> str:
        return self.limit_type


class QuotaExceeded(GatewayError):
    """A key's budget for its period is spent (the message names the budget and when it resets): OpenAI's
    ``insufficient_quota``, with Retry-After until the reset."""

    status = 429
    error_code = "INSUFFICIENT_QUOTA"
    openai_type = "insufficient_quota"

    def __init__(self, message: str, *, retry_after_s: float, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.headers = headers


class ServiceUnavailable(GatewayError):
    status = 503
    error_code = "TEMPORARILY_UNAVAILABLE"

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class DependencyError(ServiceUnavailable):
    """A dependency (the store, Redis, an upstream) failed; the message names it."""


class DeadlineExceeded(GatewayError):
    """A request's deadline passed while it waited for the model (it was never run)."""

    status = 504
    error_code = "DEADLINE_EXCEEDED"
