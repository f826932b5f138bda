"""The prompt HTTP API on a real gateway (uvicorn on loopback), on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

CHAT = [{"role": "system", "content": "You answer in {{ lang }}."}, {"role": "user", "content": "{{ question }}"}]


def _error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error_code", "message"}
    return str(body["message"])


def _create(api: httpx.Client, name: str, template: Any, **fields: Any) -> dict[str, Any]:
    response = api.post(f"/api/prompts/{name}/versions", json={"template": template, **fields})
    assert response.status_code == 201, response.text
    return dict(response.json())


def test_create_read_and_move_aliases(api: httpx.Client) -> None:
    created = _create(
        api, "qa", "Q: {{ question }}", commit_message="first", model_config={"model_name": "m", "temperature": 0}
    )
    assert (created["name"], created["version"], created["variables"]) == ("qa", 1, ["question"])
    _create(api, "qa", CHAT, tags={"author": "ann"})
    assert api.put("/api/prompts/qa/aliases/production", json={"version": 1}).json() == {
        "name": "qa",
        "alias": "production",
        "version": 1,
    }

    production = api.get("/api/prompts/qa@production").json()
    assert (production["version"], production["template"], production["aliases"]) == (
        1,
        "Q: {{ question }}",
        ["production"],
    )
    assert production["model_config"] == {"model_name": "m", "temperature": 0}
    latest = api.get("/api/prompts/qa@latest").json()
    assert (latest["version"], latest["template"], latest["tags"]) == (2, CHAT, {"author": "ann"})
    assert api.get("/api/prompts/qa/versions/2").json() == latest

    api.put("/api/prompts/qa/aliases/production", json={"version": "2"})
    assert api.get("/api/prompts/qa@production").json()["version"] == 2
    prompt = api.get("/api/prompts/qa").json()
    assert prompt["aliases"] == {"production": 2} and prompt["latest_version"] == 2
    assert [v["version"] for v in prompt["versions"]] == [1, 2]
    assert [v["version"] for v in api.get("/api/prompts/qa/versions").json()["versions"]] == [1, 2]

    assert api.delete("/api/prompts/qa/aliases/production").status_code == 204
    assert _error(api.get("/api/prompts/qa@production"), 404) == "Prompt 'qa' has no alias 'production'."
    assert _error(api.delete("/api/prompts/qa/aliases/production"), 404) == "Prompt 'qa' has no alias 'production'."


def test_versions_are_immutable(api: httpx.Client) -> None:
    _create(api, "qa", "original {{ x }}")
    for method in ("PUT", "PATCH", "DELETE"):
        response = api.request(method, "/api/prompts/qa/versions/1", json={"template": "changed"})
        message = _error(response, 405)
        assert message.startswith(f"Prompt versions are immutable: {method} on version 1 of 'qa' is not allowed.")
        assert response.headers["allow"] == "GET"
        assert response.json()["error_code"] == "METHOD_NOT_ALLOWED"
    assert api.get("/api/prompts/qa/versions/1").json()["template"] == "original {{ x }}"
    # Changing the prompt's own fields is allowed, and is the only PATCH there is.
    patched = api.patch("/api/prompts/qa", json={"description": "what qa does", "tags": {"team": "search"}})
    assert patched.status_code == 200 and patched.json()["description"] == "what qa does"
    assert "versions" in _error(api.patch("/api/prompts/qa", json={"template": "x"}), 400)


def test_etag_and_if_none_match(api: httpx.Client) -> None:
    _create(api, "qa", "v1 {{ x }}")
    api.put("/api/prompts/qa/aliases/prod", json={"version": 1})
    for path in (
        "/api/prompts/qa@prod",
        "/api/prompts/qa/versions/1",
        "/api/prompts/qa",
        "/api/prompts",
        "/api/prompts/qa/versions",
    ):
        first = api.get(path)
        etag = first.headers["etag"]
        assert etag.startswith('"') and etag.endswith('"')
        again = api.get(path, headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
        assert api.get(path, headers={"If-None-Match": f'"other", W/{etag}'}).status_code == 304
        assert api.get(path, headers={"If-None-Match": '"other"'}).status_code == 200
    old = api.get("/api/prompts/qa@prod").headers["etag"]
    _create(api, "qa", "v2 {{ x }}")
    api.put("/api/prompts/qa/aliases/prod", json={"version": 2})
    moved = api.get("/api/prompts/qa@prod", headers={"If-None-Match": old})
    assert moved.status_code == 200 and moved.json()["version"] == 2 and moved.headers["etag"] != old


def test_render_text_and_chat(api: httpx.Client) -> None:
    _create(api, "qa", "Q: {{ question }} {{ user.name }}", model_config={"max_tokens": 5})
    _create(api, "qa", CHAT)
    api.put("/api/prompts/qa/aliases/prod", json={"version": 1})
    text = api.post(
        "/api/prompts/qa@prod/render", json={"variables": {"question": "why?", "user.name": "ann", "extra": 1}}
    )
    assert text.json() == {
        "name": "qa",
        "version": 1,
        "template_type": "text",
        "text": "Q: why? ann",
        "model_config": {"max_tokens": 5},
        "response_format": None,
    }
    chat = api.post("/api/prompts/qa/versions/2/render", json={"variables": {"lang": "fr", "question": "ça va?"}})
    assert chat.json()["messages"] == [
        {"role": "system", "content": "You answer in fr."},
        {"role": "user", "content": "ça va?"},
    ]
    latest = api.post("/api/prompts/qa@latest/render", json={"variables": {"lang": "de", "question": "q"}})
    assert latest.json()["version"] == 2
    assert (
        api.post("/api/prompts/qa/render", json={"variables": {"lang": "de", "question": "q"}}).json()["version"] == 2
    )


def test_every_render_error(api: httpx.Client) -> None:
    _create(api, "qa", CHAT)
    api.put("/api/prompts/qa/aliases/prod", json={"version": 1})
    missing = api.post("/api/prompts/qa@prod/render", json={"variables": {"unrelated": 1}})
    assert _error(missing, 400).startswith("Missing variables: 'lang', 'question' ")
    assert missing.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert _error(api.post("/api/prompts/qa@prod/render", json={}), 400).startswith(
        "Missing variables: 'lang', 'question'"
    )
    assert _error(api.post("/api/prompts/qa@prod/render", json={"variables": [1]}), 400) == (
        "Field 'variables' must be an object, got list."
    )
    assert "Unknown field(s) vars" in _error(api.post("/api/prompts/qa@prod/render", json={"vars": {}}), 400)
    assert "not valid JSON" in _error(api.post("/api/prompts/qa@prod/render", content=b"{oops"), 400)
    assert _error(api.post("/api/prompts/qa@staging/render", json={}), 404) == "Prompt 'qa' has no alias 'staging'."
    assert _error(api.post("/api/prompts/nope@prod/render", json={}), 404) == "Prompt 'nope' not found."
    assert _error(api.post("/api/prompts/qa/versions/7/render", json={}), 404) == "Prompt 'qa' has no version 7."
    assert "Invalid prompt version 'x'" in _error(api.post("/api/prompts/qa/versions/x/render", json={}), 400)
    assert "Invalid prompt version '999" in _error(api.get("/api/prompts/qa/versions/" + "9" * 5000), 400)
    # str.isdigit() is true for superscripts, which int() refuses (found by the OpenAPI fuzzer: a 500)
    assert "Invalid prompt version '\u00b2'" in _error(api.get("/api/prompts/qa/versions/\u00b2"), 400)
    assert "Invalid prompt name 'b a d'" in _error(api.post("/api/prompts/b a d@prod/render", json={}), 400)


def test_write_errors(api: httpx.Client) -> None:
    assert "Field 'template' is required" in _error(api.post("/api/prompts/qa/versions", json={}), 400)
    assert "Unknown field(s) source" in _error(
        api.post("/api/prompts/qa/versions", json={"template": "x", "source": "y"}), 400
    )
    assert "Field 'template[0].content' must be a string" in _error(
        api.post("/api/prompts/qa/versions", json={"template": [{"role": "user", "content": 1}]}), 400
    )
    assert "Jinja2" in _error(api.post("/api/prompts/qa/versions", json={"template": "{% if x %}y{% endif %}"}), 400)
    assert "Invalid prompt name" in _error(api.post("/api/prompts/b%20ad/versions", json={"template": "x"}), 400)
    _create(api, "qa", "x")
    assert "reserved" in _error(api.put("/api/prompts/qa/aliases/latest", json={"version": 1}), 400)
    assert (
        _error(api.put("/api/prompts/qa/aliases/v2", json={"version": 1}), 400)
        == "Version alias name 'v2' is reserved."
    )
    assert "Field 'version' is required" in _error(api.put("/api/prompts/qa/aliases/prod", json={}), 400)
    assert "Invalid prompt version 0" in _error(api.put("/api/prompts/qa/aliases/prod", json={"version": 0}), 400)
    assert _error(api.put("/api/prompts/qa/aliases/prod", json={"version": 3}), 404) == "Prompt 'qa' has no version 3."
    assert _error(api.put("/api/prompts/nope/aliases/prod", json={"version": 1}), 404) == "Prompt 'nope' not found."
    assert api.post("/api/prompts", json={"name": "fresh", "description": "d", "tags": {"t": "1"}}).status_code == 201
    assert _error(api.post("/api/prompts", json={"name": "fresh"}), 409) == "Prompt 'fresh' already exists."
    assert "Field 'name' is required" in _error(api.post("/api/prompts", json={}), 400)
    assert _error(api.get("/api/prompts/nope"), 404) == "Prompt 'nope' not found."
    assert _error(api.get("/api/prompts/fresh@latest"), 404) == "Prompt 'fresh' has no versions yet."


def test_list_search_and_pagination(api: httpx.Client) -> None:
    for i in range(7):
        body = {"name": f"team-{i}", "tags": {"team": "search" if i < 5 else "ads", "i": str(i)}}
        assert api.post("/api/prompts", json=body).status_code == 201
    api.post("/api/prompts", json={"name": "solo", "tags": [{"key": "team", "value": "search"}]})
    names: list[str] = []
    params: dict[str, Any] = {"name_prefix": "team-", "tag": "team=search", "max_results": 2}
    pages = 0
    while True:
        answer = api.get("/api/prompts", params=params).json()
        names += [p["name"] for p in answer["prompts"]]
        pages += 1
        if "next_page_token" not in answer:
            break
        params["page_token"] = answer["next_page_token"]
    assert names == [f"team-{i}" for i in range(5)] and pages == 3
    tagged = api.get("/api/prompts", params=[("tag", "team=search"), ("tag", "i")]).json()["prompts"]
    assert [p["name"] for p in tagged] == [f"team-{i}" for i in range(5)]
    listed = [p["name"] for p in api.get("/api/prompts").json()["prompts"]]
    own = [name for name in listed if not name.startswith("judges.")]  # the built-in judges are prompts too
    assert own == ["solo", *(f"team-{i}" for i in range(7))]
    assert "Invalid max_results 'x'" in _error(api.get("/api/prompts", params={"max_results": "x"}), 400)
    assert "Invalid max_results 5000" in _error(api.get("/api/prompts", params={"max_results": 5000}), 400)
    assert "Invalid max_results '999" in _error(api.get("/api/prompts", params={"max_results": "9" * 5000}), 400)
    assert "Invalid page_token" in _error(api.get("/api/prompts", params={"page_token": "!!"}), 400)
    assert "Unknown query parameter(s) filter" in _error(api.get("/api/prompts", params={"filter": "x"}), 400)
    assert "Invalid tag filter '=x'" in _error(api.get("/api/prompts", params={"tag": "=x"}), 400)


@pytest.mark.parametrize("path", ["/api/prompts/qa@prod", "/api/prompts/qa/versions/1"])
def test_reads_name_the_missing_thing(api: httpx.Client, path: str) -> None:
    assert _error(api.get(path), 404) == "Prompt 'qa' not found."
