"""Every write endpoint of the route table that takes a JSON body refuses any other Content-Type with a 415
before reading it: a web page can POST ``text/plain``, ``application/x-www-form-urlencoded`` or
``multipart/form-data`` to any site without a CORS preflight, so taking such a body as JSON would let
any page its user opens register models, move aliases or rewrite prompts (issue 13, item 7)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from gateway.api.routing import ApiRoute
from tests.api.full_gateway import full_gateway
from tests.packages import PackageCache

# Routes whose bodies are not the admin APIs' JSON objects: scoring reads CSV too (MLflow's protocol), the
# /v1 proxy answers in OpenAI's shape and is checked by its own tests.
_OWN_CONTENT_RULES = ("/invocations", "/v1/")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, packages: PackageCache) -> Iterator[tuple[list[ApiRoute], str]]:
    with full_gateway(tmp_path_factory.mktemp("json-writes"), packages) as (app, base_url):
        yield list(app.route_table), base_url


def _json_writes(table: list[ApiRoute]) -> list[ApiRoute]:
    return [
        route
        for route in table
        if route.body is not None
        and set(route.methods) & {"POST", "PUT", "PATCH"}
        and not any(part in route.path for part in _OWN_CONTENT_RULES)
    ]


_PATH_VALUES = {"{version}": "1", "{trace_id}": "0" * 32, "{index}": "0", "{id}": "0" * 32}


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", lambda m: _PATH_VALUES.get(m.group(0), "qa"), path)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"])
def test_every_json_write_refuses_a_body_a_browser_sends_without_preflight(
    gateway: tuple[list[ApiRoute], str], content_type: str
) -> None:
    table, base_url = gateway
    writes = _json_writes(table)
    assert len(writes) >= 8  # registry and prompt writes at least
    with httpx.Client(base_url=base_url, timeout=30) as client:
        for route in writes:
            method = next(m for m in route.methods if m in ("POST", "PUT", "PATCH"))
            path = _concrete(route.path)
            response = client.request(method, path, content=b'{"name": "x"}', headers={"Content-Type": content_type})
            assert response.status_code == 415, (method, path, response.text)
            body = response.json()
            assert body["error_code"] == "UNSUPPORTED_MEDIA_TYPE"
            assert "application/json" in body["message"] and content_type in body["message"]


def test_json_with_a_utf8_charset_or_without_a_content_type_is_taken(gateway: tuple[list[ApiRoute], str]) -> None:
    _, base_url = gateway
    with httpx.Client(base_url=base_url, timeout=30) as client:
        for index, content_type in enumerate(("application/json; charset=utf-8", "Application/JSON", None)):
            headers = {"Content-Type": content_type} if content_type else {}
            response = client.post(
                "/api/prompts/json-writes/versions", content=b'{"template": "Hi {{ name }}"}', headers=headers
            )
            assert response.status_code == 201, (content_type, response.text)
            assert response.json()["version"] == index + 1
        latin1 = client.post(
            "/api/prompts/json-writes/versions",
            content=b'{"template": "x"}',
            headers={"Content-Type": "application/json; charset=latin-1"},
        )
        assert latin1.status_code == 415
