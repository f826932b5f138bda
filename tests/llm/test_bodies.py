"""Request bodies go upstream unchanged but for the model; bad bodies get a 400 that names the field."""

from __future__ import annotations

import pytest

from tests.llm.conftest import CLIENT_KEY, FakeUpstream, Gateway, raw_client


def test_raw_bytes_forwarded_when_the_model_needs_no_rewrite(gw: Gateway, upstream: FakeUpstream) -> None:
    body = b'{ "model" : "fake-model",\n  "messages": [{"role": "user", "content": "hi"}], "z_new_field": 1.50 }'
    with raw_client(gw) as client:
        answer = client.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 200
    assert upstream.recorder.requests[0].body == body


def test_only_the_model_value_is_rewritten(gw: Gateway, upstream: FakeUpstream) -> None:
    body = (
        b'{"messages": [{"role": "user", "content": "say \\"model\\": \\"x\\""}],  "model":  "gpt-4o-mini", "t": 1.50}'
    )
    with raw_client(gw) as client:
        answer = client.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 200
    assert upstream.recorder.requests[0].body == body.replace(b'"gpt-4o-mini"', b'"fake-model"')


def test_client_headers_do_not_go_upstream(gw: Gateway, upstream: FakeUpstream) -> None:
    with raw_client(gw, authorization=f"Bearer {CLIENT_KEY}", cookie="session=secret") as client:
        client.post("/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": []})
    headers = upstream.recorder.requests[0].headers
    assert CLIENT_KEY not in str(headers) and "cookie" not in headers
    assert headers["authorization"].startswith("Bearer sk-provider-")


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"[1, 2]", 400, "must be a JSON object"),
        (b'{"messages": []}', 400, "'model' is required"),
        (b'{"model": 42, "messages": []}', 400, "'model' must be a non-empty string"),
        (b'{"model": "gpt-4o-mini", "messages": [], "stream": "yes"}', 400, "'stream' must be a boolean"),
        (b'{"model": "gpt-4o-mini"}', 400, "'messages' is required"),
        (b'{"model": "nope", "messages": []}', 404, "'nope' does not exist"),
    ],
)
def test_bad_bodies(gw: Gateway, upstream: FakeUpstream, body: bytes, status: int, fragment: str) -> None:
    with raw_client(gw) as client:
        answer = client.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == status
    error = answer.json()["error"]
    assert fragment in error["message"] and set(error) == {"message", "type", "code"}
    assert error["type"] == "invalid_request_error"
    assert upstream.recorder.requests == []


def test_prompt_field_of_completions_is_the_text_prompt(gw: Gateway, upstream: FakeUpstream) -> None:
    with raw_client(gw) as client:
        answer = client.post("/v1/completions", json={"model": "gpt-4o-mini", "prompt": "plain text"})
    assert answer.status_code == 200 and answer.json()["choices"][0]["text"] == "Echo: plain text"
