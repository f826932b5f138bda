"""Judges as data: value kinds and their schemas, the instructions' variables, names, required fields,
the built-ins and the judge request (pure: no server)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.errors import InvalidParameter
from judges.builtin import BUILTINS
from judges.definitions import (
    BOOL,
    Judge,
    ValueKind,
    check_instructions,
    missing_field,
    parse_judge_spec,
    value_kind_from_schema,
    value_schema,
)
from judges.request import judge_request, repair_request


def judge(name: str = "custom", instructions: str = "Rate {{ outputs }}", **fields: Any) -> Judge:
    values: dict[str, Any] = {
        "value_kind": BOOL,
        "route": "judge",
        "required": tuple(
            (v,) for v in check_instructions(instructions, allowed=("inputs", "outputs", "expectations", "guidelines"))
        ),
        "prompt_name": f"judges.{name}",
        "prompt_version": 1,
    }
    values.update(fields)
    return Judge(name=name, instructions=instructions, **values)


@pytest.mark.parametrize(
    ("data", "schema"),
    [
        ({"type": "bool"}, {"type": "boolean"}),
        ({"type": "int", "min": 1, "max": 5}, {"type": "integer", "minimum": 1, "maximum": 5}),
        ({"type": "float", "min": 0, "max": 1.5}, {"type": "number", "minimum": 0.0, "maximum": 1.5}),
        ({"type": "categorical", "labels": ["good", "bad"]}, {"type": "string", "enum": ["good", "bad"]}),
    ],
)
def test_each_value_kind_has_its_schema_and_round_trips(data: dict[str, Any], schema: dict[str, Any]) -> None:
    kind = ValueKind.from_dict(data)
    assert value_schema(kind) == schema
    assert ValueKind.from_dict(kind.to_dict()) == kind
    assert value_kind_from_schema(schema) == kind


@pytest.mark.parametrize(
    ("data", "named"),
    [
        ("maybe", "'value_kind' must be an object"),
        ({"type": "string"}, "'value_kind.type' must be one of bool, int, float, categorical"),
        ({"type": "int", "min": 1}, "'value_kind.max' is required"),
        ({"type": "int", "min": 1, "max": 4.5}, "'value_kind.max' must be a whole number"),
        ({"type": "int", "min": 5, "max": 1}, "min (5) must be less than max (1)"),
        ({"type": "float", "min": 0, "max": float("inf")}, "'value_kind.max' must be a finite number"),
        ({"type": "float", "min": True, "max": 2}, "'value_kind.min' must be a number"),
        ({"type": "categorical", "labels": ["only"]}, "'value_kind.labels' must be a list of 2 to 50"),
        ({"type": "categorical", "labels": ["a", "a"]}, "has 'a' twice"),
        ({"type": "categorical", "labels": ["a", 3]}, "'value_kind.labels[1]' must be a non-empty string"),
        ({"type": "bool", "labels": ["a", "b"]}, "key(s) labels that a bool value does not take"),
    ],
)
def test_a_bad_value_kind_is_refused_naming_the_field(data: Any, named: str) -> None:
    with pytest.raises(InvalidParameter) as caught:
        ValueKind.from_dict(data)
    assert named in caught.value.message


def test_instructions_may_use_only_inputs_outputs_and_expectations() -> None:
    assert check_instructions("Q: {{ inputs }} A: {{outputs}} E: {{ expectations }} {{ inputs }}") == (
        "inputs",
        "outputs",
        "expectations",
    )
    with pytest.raises(InvalidParameter) as caught:
        check_instructions("Is {{ outputs }} supported by {{ context }} and {{ trace.spans }} or {{ a b }}?")
    message = caught.value.message
    assert "'context'" in message and "'trace.spans'" in message and "'a b'" in message
    assert "may use only {{ inputs }}, {{ outputs }}, {{ expectations }}" in message
    with pytest.raises(InvalidParameter, match="uses no variable"):
        check_instructions("Is it good?")
    with pytest.raises(InvalidParameter, match="Jinja2"):
        check_instructions("{% for x in y %}{{ outputs }}{% endfor %}")
    with pytest.raises(InvalidParameter, match="'guidelines'"):
        check_instructions("{{ outputs }} {{ guidelines }}")  # only the built-in guidelines judge has it


def test_a_judge_spec_names_each_bad_field() -> None:
    body = {
        "name": "tone",
        "instructions": "Is {{ outputs }} polite?",
        "route": "judge",
        "value_kind": {"type": "bool"},
    }
    spec = parse_judge_spec(body)
    assert (spec.name, spec.route, spec.value_kind, spec.required) == ("tone", "judge", BOOL, (("outputs",),))
    for change, named in [
        ({"name": "judges.tone"}, "Field 'name'"),
        ({"name": "9lives"}, "Field 'name'"),
        ({"name": "x" * 59}, "Field 'name'"),
        ({"route": ""}, "Field 'route'"),
        ({"route": None}, "Field 'route' is required"),
        ({"instructions": "{{ context }}"}, "'context'"),
        ({"description": 3}, "Field 'description'"),
        ({"temperature": 0}, "Unknown field(s) temperature"),
    ]:
        with pytest.raises(InvalidParameter) as caught:
            parse_judge_spec({**body, **change})
        assert named in caught.value.message, (change, caught.value.message)


def test_a_missing_field_is_named() -> None:
    correctness = BUILTINS["correctness"]
    built = judge("correctness", correctness.instructions, required=correctness.required)
    item = {"inputs": {"question": "2+2?"}, "outputs": "4"}
    assert "'expectations'" in (missing_field(built, item) or "")
    assert "'expectations' must be an object" in (missing_field(built, {**item, "expectations": "4"}) or "")
    problem = missing_field(built, {**item, "expectations": {"expected_response": ""}})
    assert problem is not None and "'expected_response' or 'expected_facts'" in problem
    assert missing_field(built, {**item, "expectations": {"expected_facts": ["4"]}}) is None
    assert "'outputs'" in (missing_field(built, {"inputs": "q", "outputs": None, "expectations": {}}) or "")
    guidelines = BUILTINS["guidelines"]
    without = judge("guidelines", guidelines.instructions, required=guidelines.required)
    assert "'guidelines'" in (missing_field(without, item) or "")
    assert missing_field(without.with_guidelines(["Be polite"]), item) is None


def test_every_builtin_uses_tagged_sections_of_its_fields_only() -> None:
    assert set(BUILTINS) == {"relevance_to_query", "safety", "conciseness", "guidelines", "correctness", "groundedness"}
    for builtin in BUILTINS.values():
        used = check_instructions(builtin.instructions, allowed=builtin.variables)
        needed = {paths[0].split(".")[0] for paths in builtin.required}
        assert needed <= set(used) | {"guidelines"}, builtin.name
        for name in used:
            assert f"<{name}>\n{{{{ {name} }}}}\n</{name}>" in builtin.instructions, (builtin.name, name)
        assert builtin.value_kind == BOOL


def test_the_judge_request_and_its_repair() -> None:
    kind = ValueKind.from_dict({"type": "int", "min": 1, "max": 5})
    rated = judge("helpful", "Q: {{ inputs }}\nA: {{ outputs }}\nE: {{ expectations }}", value_kind=kind)
    item = {"inputs": {"question": "why?"}, "outputs": "Because.", "expectations": "because"}
    request = judge_request(rated, item, "judge-route")
    assert request["model"] == "judge-route" and request["temperature"] == 0
    system, user = request["messages"]
    assert system["role"] == "system" and "an integer from 1 to 5" in system["content"]
    assert user == {"role": "user", "content": 'Q: {\n  "question": "why?"\n}\nA: Because.\nE: "because"'}
    assert request["response_format"] == {
        "type": "json_schema",
        "json_schema": {
            "name": "judge_helpful",
            "strict": True,
            "schema": {
                "type": "object",
                "additionalProperties": False,
                "required": ["rationale", "result"],
                "properties": {
                    "rationale": {"type": "string"},
                    "result": {"type": "integer", "minimum": 1, "maximum": 5},
                },
            },
        },
    }
    repair = repair_request(request, "six", "The result must be an integer from 1 to 5, got 'six'.", rated)
    assert repair["messages"][:2] == request["messages"]
    assert repair["messages"][2] == {"role": "assistant", "content": "six"}
    assert repair["messages"][3]["role"] == "user" and "got 'six'" in repair["messages"][3]["content"]
    assert repair["response_format"] == request["response_format"]


def test_guidelines_are_rendered_one_per_line() -> None:
    guidelines = BUILTINS["guidelines"]
    built = judge("guidelines", guidelines.instructions, required=guidelines.required)
    built = built.with_guidelines(["Mention the price", "Be polite"])
    content = judge_request(built, {"inputs": "q", "outputs": "a"}, "r")["messages"][1]["content"]
    assert "<guidelines>\n- Mention the price\n- Be polite\n</guidelines>" in content


def test_a_field_the_instructions_show_is_required_too() -> None:
    relevance = BUILTINS["relevance_to_query"]  # edited (a new prompt version) to show expectations as well
    edited = judge("relevance_to_query", relevance.instructions + "\n{{ expectations }}", required=relevance.required)
    problem = missing_field(edited, {"inputs": "q", "outputs": "a"})
    assert problem == "The item has no 'expectations': the instructions of the relevance_to_query judge show it."
    assert missing_field(edited, {"inputs": "q", "outputs": "a", "expectations": {}}) is None
