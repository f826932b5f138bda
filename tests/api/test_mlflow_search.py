"""MLflow's search language as gateway/api/mlflow_search.py evaluates it: the filters MLflow's client and users
send, MLflow's special rule for the prompt tag, order and pages, and an error naming what is wrong."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.api.mlflow_entities import model_version_json, registered_model_json
from gateway.api.mlflow_search import (
    MODEL_RULES,
    VERSION_RULES,
    Clause,
    is_querying_prompts,
    parse_filter,
    parse_order_by,
    search,
)
from gateway.errors import InvalidParameter

MODELS = [
    registered_model_json("iris", description=None, tags={"team": "ml"}, created_at=3, updated_at=30, aliases={},
                          latest=None),
    registered_model_json("Iris-B", description=None, tags={"team": "data"}, created_at=2, updated_at=20,
                          aliases={}, latest=None),
    registered_model_json("qa", description=None, tags={"mlflow.prompt.is_prompt": "true"}, created_at=1,
                          updated_at=10, aliases={}, latest=None),
]  # fmt: skip
VERSIONS = [
    model_version_json(name, version, source=f"/m/{name}/{version}", description=None, tags={}, aliases=(),
                       created_at=version, updated_at=version)
    for name, version in (("iris", 1), ("iris", 2), ("iris", 10), ("wine", 1))
]  # fmt: skip


def _names(filter_text: str | None, order_by: tuple[str, ...] = ()) -> list[str]:
    found, _ = search(MODELS, MODEL_RULES, clauses=parse_filter(filter_text, MODEL_RULES), order_by=order_by,
                      max_results=None, page_token=None)  # fmt: skip
    return [m["name"] for m in found]


def _versions(filter_text: str, order_by: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    clauses = parse_filter(filter_text, VERSION_RULES)
    found, _ = search(VERSIONS, VERSION_RULES, clauses=clauses, order_by=order_by, max_results=None, page_token=None)
    return [(v["name"], v["version"]) for v in found]


@pytest.mark.parametrize(
    ("filter_text", "expected"),
    [
        (None, ["Iris-B", "iris", "qa"]),  # names ascending (byte order, as SQL's)
        ("  ", ["Iris-B", "iris", "qa"]),
        ("name='iris'", ["iris"]),
        ('name = "iris"', ["iris"]),
        ("name != 'iris'", ["Iris-B", "qa"]),
        ("name LIKE 'ir%'", ["iris"]),
        ("name like 'I_is%'", ["Iris-B"]),
        ("name ILIKE 'ir%'", ["Iris-B", "iris"]),
        ("name IN ('qa', 'iris', 'none')", ["iris", "qa"]),
        ("name NOT IN ('qa')", ["Iris-B", "iris"]),
        ("tags.team = 'ml'", ["iris"]),
        ("tag.team LIKE '%a%' and name ILIKE 'iris%'", ["Iris-B"]),
        ("tags.`team` != 'ml'", ["Iris-B"]),  # a model without the tag matches no clause on it
        ("tags.`mlflow.prompt.is_prompt` = 'true'", ["qa"]),
        # MLflow's rule: models lack the prompt tag, and "not a prompt" clauses match them.
        ("tags.`mlflow.prompt.is_prompt` != 'true'", ["Iris-B", "iris"]),
        ("tags.`mlflow.prompt.is_prompt` = 'false'", ["Iris-B", "iris"]),
        ("attribute.name = 'qa'", ["qa"]),
    ],
)
def test_registered_model_filters(filter_text: str | None, expected: list[str]) -> None:
    assert _names(filter_text) == expected


def test_version_filters_and_order() -> None:
    assert _versions("name = 'iris'") == [("iris", "10"), ("iris", "2"), ("iris", "1")]  # numbers, descending
    assert _versions("version_number >= 2") == [("iris", "10"), ("iris", "2")]
    assert _versions("version_number = '1'") == [("iris", "1"), ("wine", "1")]
    assert _versions("source_path LIKE '/m/wine/%'") == [("wine", "1")]
    assert _versions("run_id = ''") == _versions("name LIKE '%'")
    assert _versions("name = 'iris'", ("version_number ASC",)) == [("iris", "1"), ("iris", "2"), ("iris", "10")]
    assert _versions("version_number < 2", ("name DESC",)) == [("wine", "1"), ("iris", "1")]


def test_order_by_keys_and_directions() -> None:
    assert _names(None, ("last_updated_timestamp DESC",)) == ["iris", "Iris-B", "qa"]
    assert _names(None, ("creation_timestamp",)) == ["qa", "Iris-B", "iris"]
    assert _names(None, ("`name` DESC",)) == ["qa", "iris", "Iris-B"]
    assert parse_order_by(["timestamp"], MODEL_RULES) == [("last_updated_timestamp", True), ("name", True)]
    assert parse_order_by([], VERSION_RULES) == [("name", True), ("version", False)]


def test_pages_follow_the_token() -> None:
    clauses = parse_filter(None, MODEL_RULES)
    seen: list[str] = []
    token: str | None = None
    for _ in range(3):
        page, token = search(MODELS, MODEL_RULES, clauses=clauses, order_by=(), max_results=2, page_token=token)
        seen += [m["name"] for m in page]
        if token is None:
            break
    assert seen == ["Iris-B", "iris", "qa"] and token is None


def test_prompt_queries_are_recognized() -> None:
    def asks(text: str) -> bool:
        return is_querying_prompts(parse_filter(text, MODEL_RULES))

    assert asks("tags.`mlflow.prompt.is_prompt` = 'true' AND name LIKE 'q%'")
    assert asks("tag.`mlflow.prompt.is_prompt` != 'false'")
    assert not asks("tags.`mlflow.prompt.is_prompt` = 'false'")
    assert not asks("name = 'qa'")
    assert parse_filter("name IN ('a','b')", MODEL_RULES) == [Clause("attribute", "name", "IN", ("a", "b"))]


@pytest.mark.parametrize(
    ("rules", "filter_text", "message"),
    [
        (MODEL_RULES, "owner = 'x'", "Invalid attribute key 'owner'"),
        (MODEL_RULES, "name ~ 'x'", "expected a comparator"),
        (MODEL_RULES, "name = iris", "expected a quoted string"),
        (MODEL_RULES, "name = 'a' OR name = 'b'", "expected AND between clauses"),
        (MODEL_RULES, "name > 'a'", "Invalid comparator '>' for attribute 'name'"),
        (MODEL_RULES, "tags.k IN ('a')", "Invalid comparator 'IN' for tag 'k'"),
        (MODEL_RULES, "name IN 'a'", "parenthesized list"),
        (MODEL_RULES, "name IN ('a' 'b')", "expected ',' or ')'"),
        (MODEL_RULES, "name = 'x' AND", "expected an attribute"),
        (VERSION_RULES, "version_number > 'one'", "expected an integer"),
        (VERSION_RULES, "version_number LIKE '1%'", "Invalid comparator 'LIKE' for attribute 'version_number'"),
        (VERSION_RULES, "source_path IN ('a')", "Invalid comparator 'IN' for attribute 'source_path'"),
        (VERSION_RULES, "version_number = " + "9" * 5000, "expected a quoted string or an integer"),
    ],
)
def test_bad_filters_name_what_is_wrong(rules: Any, filter_text: str, message: str) -> None:
    with pytest.raises(InvalidParameter, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_filter(filter_text, rules)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"order_by": ("owner",)}, "Invalid order_by key 'owner'"),
        ({"order_by": ("name UP",)}, "Invalid order_by clause 'name UP'"),
        ({"order_by": ("name", "name DESC")}, "names 'name' twice"),
        ({"max_results": 1001}, "from 1 to 1000"),
        ({"max_results": 0}, "from 1 to 1000"),
        ({"page_token": "not-a-token"}, "Invalid page_token"),
        ({"page_token": "eyJvZmZzZXQiOiAtMX0="}, "offset must be a whole number"),  # {"offset": -1}
    ],
)
def test_bad_order_and_pages_name_what_is_wrong(kwargs: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {"order_by": (), "max_results": None, "page_token": None, **kwargs}
    with pytest.raises(InvalidParameter, match=message):
        search(MODELS, MODEL_RULES, clauses=[], **arguments)
