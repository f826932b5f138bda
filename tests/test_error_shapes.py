"""One error, two shapes: the renderer answers any GatewayError in MLflow's or OpenAI's shape."""

from __future__ import annotations

from gateway.errors import NotFound, ServiceUnavailable
from gateway.http import render_error
from gateway.llm.errors import UpstreamError


def test_one_error_renders_in_both_shapes() -> None:
    error = ServiceUnavailable("The model is busy.", retry_after_s=3)

    mlflow = render_error(error, "mlflow")
    assert mlflow.status_code == 503
    assert mlflow.body == b'{"error_code":"TEMPORARILY_UNAVAILABLE","message":"The model is busy."}'
    assert mlflow.raw_headers == [
        (b"retry-after", b"3"),
        (b"content-length", str(len(mlflow.body)).encode()),
        (b"content-type", b"application/json"),
    ]

    openai = render_error(error, "openai")
    assert openai.status_code == 503
    assert openai.body == (
        b'{"error":{"message":"The model is busy.","type":"server_error","code":"temporarily_unavailable"}}'
    )
    assert openai.raw_headers == [
        (b"retry-after", b"3"),
        (b"content-length", str(len(openai.body)).encode()),
        (b"content-type", b"application/json"),
    ]


def test_a_proxy_error_keeps_its_openai_type_and_code_and_renders_as_mlflow_too() -> None:
    error = UpstreamError("Route 'm': the upstream answered HTTP 429.", code="upstream_429", retry_after_s=2.4)
    openai = render_error(error, "openai")
    assert openai.status_code == 502
    assert openai.body == (
        b'{"error":{"message":"Route \'m\': the upstream answered HTTP 429.","type":"upstream_error",'
        b'"code":"upstream_429"}}'
    )
    assert openai.headers["retry-after"] == "2"  # whole seconds, at least one
    mlflow = render_error(error, "mlflow")
    assert mlflow.body == b'{"error_code":"UPSTREAM_429","message":"Route \'m\': the upstream answered HTTP 429."}'
    assert error.error_type == "upstream_429"  # what the span's error.type says


def test_a_client_error_is_an_invalid_request_in_openai_shape() -> None:
    body = render_error(NotFound("No such thing."), "openai").body
    assert body == (
        b'{"error":{"message":"No such thing.","type":"invalid_request_error","code":"resource_does_not_exist"}}'
    )
