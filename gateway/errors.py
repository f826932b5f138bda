"""Errors that carry their HTTP status and MLflow error code.

GatewayError(message)                  500 INTERNAL_ERROR
 ├── BadRequest                        400 BAD_REQUEST
 ├── InvalidParameter                  400 INVALID_PARAMETER_VALUE
 │    └── InvalidPackage               400 INVALID_PARAMETER_VALUE  (a model package that cannot be served)
 ├── ModelPredictError                 400 BAD_REQUEST              (the model raised; MLflow answers 400 too)
 ├── NotFound                          404 RESOURCE_DOES_NOT_EXIST
 ├── AlreadyExists                     409 RESOURCE_ALREADY_EXISTS
 ├── UnsupportedMediaType              415 UNSUPPORTED_MEDIA_TYPE
 ├── ServiceUnavailable                503 TEMPORARILY_UNAVAILABLE  (carries retry_after_s)
 │    └── DependencyError              503 TEMPORARILY_UNAVAILABLE  (a dependency failed: names which)
 └── DeadlineExceeded                  504 DEADLINE_EXCEEDED        (a request's deadline passed before it ran)

This module imports nothing of ours, so every layer can raise these.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base class: ``status`` and ``error_code`` decide the HTTP answer, ``message`` is shown to the client."""

    status: int = 500
    error_code: str = "INTERNAL_ERROR"

    def __init__(self, message: str, *, status: int | None = None, error_code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if error_code is not None:
            self.error_code = error_code

    def __str__(self) -> str:
        return self.message


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


class NotFound(GatewayError):
    status = 404
    error_code = "RESOURCE_DOES_NOT_EXIST"


class AlreadyExists(GatewayError):
    status = 409
    error_code = "RESOURCE_ALREADY_EXISTS"


class UnsupportedMediaType(GatewayError):
    status = 415
    error_code = "UNSUPPORTED_MEDIA_TYPE"


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
