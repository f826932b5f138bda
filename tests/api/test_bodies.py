"""Shared body fields: one rule for ``tags`` on the registry and the prompt APIs alike."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.api.bodies import tags_field
from gateway.errors import BadRequest
from tests.api.conftest import ServedGateway

SHAPE = 'must be an object or a list of {"key", "value"} objects'


@pytest.mark.parametrize(
    ("body", "tags"),
    [
        ({}, None),
        ({"tags": None}, None),
        ({"tags": {}}, {}),
        ({"tags": {"team": "search"}}, {"team": "search"}),
        ({"tags": [{"key": "team", "value": "search"}]}, {"team": "search"}),
    ],
)
def test_tags_are_an_object_or_mlflows_key_value_list(body: dict[str, Any], tags: dict[str, str] | None) -> None:
    assert tags_field(body) == tags


@pytest.mark.parametrize(
    ("tags", "message"),
    [
        (["team"], f"Field 'tags' {SHAPE}."),
        ([{"key": "team"}], f"Field 'tags' {SHAPE}."),
        ("team", f"Field 'tags' {SHAPE}, got string."),
        (3, f"Field 'tags' {SHAPE}, got number."),
        ({"team": 1}, "Field 'tags': tag 'team' must have a non-empty string key and a string value."),
        ({"": "x"}, "Field 'tags': tag '' must have a non-empty string key and a string value."),
        ([{"key": 1, "value": "x"}], "Field 'tags': tag 1 must have a non-empty string key and a string value."),
    ],
)
def test_bad_tags_are_one_400_naming_the_field(served: ServedGateway, tags: Any, message: str) -> None:
    with pytest.raises(BadRequest) as raised:
        tags_field({"tags": tags})
    assert raised.value.message == message
    expected = {"error_code": "BAD_REQUEST", "message": message}
    for path, body in (
        ("/api/registry/models", {"name": "tagged", "tags": tags}),
        ("/api/prompts", {"name": "tagged", "tags": tags}),
        ("/api/prompts/tagged/versions", {"template": "x", "tags": tags}),
    ):
        response = served.client.post(path, json=body)
        assert (response.status_code, response.json()) == (400, expected), path
