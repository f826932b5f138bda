"""A 2xx the client cannot use is a failed attempt, never a relayed success (issue 13 item 7): an upstream
that answered 200 with ``<html>oops</`` was relayed as a 200 and stored as a success. Now such an answer
(or a JSON list, or a whole JSON answer to a stream request) is retried and falls back like a 5xx, and
ends as a 502 naming the target, an error in the trace summary and the metrics."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.llm.conftest import FakeUpstream, Gateway, running_gateway, target, wait_until

FAST = {"retries": 1, "backoff_initial_s": 0.01, "backoff_max_s": 0.05}


@pytest.fixture(scope="module")
def gw(fake_upstream: FakeUpstream, not_json_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    llm = {
        "routes": [
            {"name": "text-answer", **FAST, "targets": [target(not_json_url, "text")]},
            {"name": "list-answer", **FAST, "targets": [target(not_json_url, "list")]},
            {"name": "json-answer", **FAST, "targets": [target(not_json_url, "json")]},
            {"name": "falls-back", **FAST, "targets": [target(not_json_url, "text"), target(fake_upstream)]},
        ]
    }
    with running_gateway(tmp_path_factory.mktemp("unusable"), llm) as gateway:
        yield gateway


def _chat(route: str, *, stream: bool = False) -> dict[str, object]:
    return {"model": route, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(("route", "stream", "model"), [
    ("text-answer", False, "text"), ("list-answer", False, "list"), ("json-answer", True, "json"),
])  # fmt: skip
def test_an_unusable_2xx_is_a_502_naming_the_target(
    gw: Gateway, not_json_url: str, route: str, stream: bool, model: str
) -> None:
    response = httpx.post(gw.v1 + "/chat/completions", json=_chat(route, stream=stream), timeout=30)
    assert response.status_code == 502, response.text
    error = response.json()["error"]
    assert error["code"] == "upstream_invalid_response"
    assert f"{not_json_url} {model}" in error["message"]
    assert ("not events" if stream else "not a JSON object") in error["message"]
    assert "2 attempt(s)" in error["message"]  # retried like a 5xx

    def summary() -> dict[str, object] | None:
        found = httpx.get(gw.base_url + "/api/traces", params={"route": route, "limit": 1}).json()["traces"]
        return found[0] if found else None

    row = wait_until(summary, what="the call's summary")
    assert (row["status_code"], row["error_type"]) == (502, "invalid_response")


def test_an_unusable_2xx_falls_back_to_the_next_target(gw: Gateway) -> None:
    response = httpx.post(gw.v1 + "/chat/completions", json=_chat("falls-back"), timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "Echo: hi"
