"""Gateway keys (hashes in the config, Bearer on the wire) and secrets that never leave the gateway."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import orjson
import pytest
from opentelemetry.trace import SpanKind

from gateway.config import load_settings
from gateway.llm.routes_config import warn_about_risky_settings
from tests.llm.conftest import (
    CLIENT_KEY,
    CLIENT_KEY_DIGEST,
    PROVIDER_KEY,
    FakeUpstream,
    Gateway,
    running_gateway,
    target,
    wait_until,
)
from tests.llm.sdk import SDK, SDK_KINDS

HELLO = [{"role": "user", "content": "Hello gateway"}]


@pytest.fixture(scope="module")
def guarded(fake_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    llm = {
        "capture_content": True,  # the widest surface: message content on spans and in the store
        "max_body_bytes": 64 * 1024,  # a body over it is one of the errors the secrets test runs
        "routes": [
            {"name": "gpt-4o-mini", "targets": [target(fake_upstream)]},
            {
                "name": "fails",
                "retries": 0,
                "targets": [target(fake_upstream, "fake-model@status=401,echo_key=1")],
            },
        ],
    }
    auth = {"keys": [CLIENT_KEY_DIGEST, "0" * 64]}
    with running_gateway(Path(tmp_path_factory.mktemp("auth")), llm, auth) as gw:
        yield gw


@pytest.mark.parametrize("kind", SDK_KINDS)
def test_right_key_works_and_wrong_key_is_401(guarded: Gateway, kind: str) -> None:
    answer = SDK(kind, guarded.v1, api_key=CLIENT_KEY).chat(model="gpt-4o-mini", messages=HELLO)
    assert answer.choices[0].message.content == "Echo: Hello gateway"

    with pytest.raises(openai.AuthenticationError) as caught:
        SDK(kind, guarded.v1, api_key="gw-wrong-key").chat(model="gpt-4o-mini", messages=HELLO)
    assert caught.value.code == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        SDK(kind, guarded.v1, api_key="gw-wrong-key").model_ids()


@pytest.mark.parametrize("headers", [{}, {"authorization": "Basic abc"}, {"authorization": "Bearer"}])
def test_missing_or_malformed_key_is_401(guarded: Gateway, upstream: FakeUpstream, headers: dict[str, str]) -> None:
    answer = httpx.post(
        guarded.v1 + "/chat/completions", json={"model": "gpt-4o-mini", "messages": HELLO}, headers=headers
    )
    assert answer.status_code == 401
    error = answer.json()["error"]
    assert error["type"] == "authentication_error" and "Bearer" in error["message"]
    assert upstream.recorder.requests == []


def test_key_id_on_the_server_span(guarded: Gateway) -> None:
    guarded.exporter.clear()
    SDK("sync", guarded.v1, api_key=CLIENT_KEY).chat(model="gpt-4o-mini", messages=HELLO)
    spans = guarded.wait_spans(lambda s: any(x.kind is SpanKind.SERVER for x in s))
    (server,) = [s for s in spans if s.kind is SpanKind.SERVER]
    assert server.attributes["gateway.auth.key_id"] == CLIENT_KEY_DIGEST[:12]


def test_provider_and_client_keys_appear_nowhere(
    guarded: Gateway, upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    """Spans, log lines (at DEBUG), responses and stored summaries never hold either key, after calls that
    succeed and a run of errors: upstream errors quoting the provider key, and bodies carrying both keys that
    are over llm.max_body_bytes (413), nested past http.max_json_depth (400) or not JSON (400)."""
    caplog.set_level(logging.DEBUG)
    guarded.exporter.clear()
    seen: list[str] = []
    sdk = SDK("sync", guarded.v1, api_key=CLIENT_KEY)
    seen.append(sdk.chat(model="gpt-4o-mini", messages=HELLO).model_dump_json())
    seen.extend(c.model_dump_json() for c in sdk.chat_stream(model="gpt-4o-mini", messages=HELLO))
    seen.append(sdk.responses(model="gpt-4o-mini", input="Hello gateway").model_dump_json())
    seen.extend(e.model_dump_json() for e in sdk.responses_stream(model="gpt-4o-mini", input="Hello gateway"))
    headers = {"authorization": f"Bearer {CLIENT_KEY}"}
    with httpx.Client(base_url=guarded.base_url, headers=headers, timeout=30) as client:
        for body in (
            {"model": "fails", "messages": HELLO},  # upstream 401 quoting the provider key -> 502
            {"model": "gpt-4o-mini", "messages": HELLO, "fake": {"status": 400, "echo_key": True}},  # passed through
            {"model": "gpt-4o-mini", "messages": HELLO, "stream": True, "fake": {"break_after": 1}},
        ):
            answer = client.post("/v1/chat/completions", json=body)
            seen.append(f"{answer.status_code} {answer.headers} {answer.text}")
        assert "[redacted]" in seen[-3] and "[redacted]" in seen[-2]  # the upstream did quote it
        refused = []
        for body in (
            orjson.dumps({"model": "gpt-4o-mini", "messages": HELLO, "pad": f"{CLIENT_KEY} {PROVIDER_KEY} " * 2000}),
            b'{"model": "gpt-4o-mini", "messages": ' + b"[" * 80 + orjson.dumps(PROVIDER_KEY) + b"]" * 80 + b"}",
            orjson.dumps({"model": "gpt-4o-mini", "messages": HELLO, "api_key": PROVIDER_KEY})[:-1],
        ):
            for path in ("/v1/chat/completions", "/v1/responses"):
                answer = client.post(path, content=body, headers={"content-type": "application/json"})
                refused.append(answer.status_code)
                seen.append(f"{answer.status_code} {answer.headers} {answer.text}")
        assert refused == [413, 413, 400, 400, 400, 400], refused
        answer = client.post("/v1/responses", json={"model": "fails", "input": "Hello gateway"})
        seen.append(f"{answer.status_code} {answer.headers} {answer.text}")
        assert answer.status_code == 502 and "[redacted]" in seen[-1]
        summaries = wait_until(lambda: client.get("/api/traces").json().get("traces"), what="stored summaries")
        seen.append(orjson.dumps(summaries).decode())
        for summary in summaries:
            seen.append(client.get(f"/api/traces/{summary['trace_id']}").text)
    with httpx.Client(base_url=guarded.base_url, timeout=30) as client:
        seen.append(client.post("/v1/chat/completions", headers={"authorization": "Bearer " + PROVIDER_KEY}).text)

    assert any(PROVIDER_KEY in r.headers.get("authorization", "") for r in upstream.recorder.requests)
    spans = guarded.wait_spans(lambda s: len([x for x in s if x.kind is SpanKind.SERVER]) >= 6)
    exported = orjson.dumps(
        [[dict(s.attributes or {}), [dict(e.attributes or {}) for e in s.events], s.status.description] for s in spans]
    ).decode()
    logs = caplog.text + "\n".join(str(r.args) for r in caplog.records)
    assert "gen_ai.input.messages" in exported  # content capture was on
    for secret in (PROVIDER_KEY, CLIENT_KEY):
        assert secret not in exported
        assert secret not in logs
        assert not [text for text in seen if secret in text]


def test_open_gateway_bound_beyond_loopback_warns(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.llm")
    open_wide = load_settings({"host": "0.0.0.0", "port": 9000}, environ={})
    warn_about_risky_settings(open_wide.llm, open_wide.auth, host=open_wide.host, port=open_wide.port, environ={})
    assert "auth.keys is empty" in caplog.text and "0.0.0.0:9000" in caplog.text

    caplog.clear()
    loopback = load_settings({"host": "127.0.0.1"}, environ={})
    warn_about_risky_settings(loopback.llm, loopback.auth, host=loopback.host, port=loopback.port, environ={})
    keyed = load_settings({"host": "0.0.0.0", "auth": {"keys": [CLIENT_KEY_DIGEST]}}, environ={})
    warn_about_risky_settings(keyed.llm, keyed.auth, host=keyed.host, port=keyed.port, environ={})
    assert "auth.keys is empty" not in caplog.text
