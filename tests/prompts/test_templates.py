"""Template rendering: the same results as MLflow's own PromptVersion.format, and our stricter edges."""

from __future__ import annotations

from typing import Any

import mlflow
import pytest
from mlflow.entities.model_registry import PromptVersion as MlflowPromptVersion
from mlflow.exceptions import MlflowException
from packaging.version import Version

from gateway.errors import InvalidParameter
from prompts.templates import compile_template, validate_template

TEXT_CASES: list[tuple[str, dict[str, Any]]] = [
    ("Hello, {{name}}!", {"name": "Alice"}),
    ("Hello, {{ name }}!", {"name": "Alice"}),
    ("Hello, {{   name\t}}!", {"name": "Alice"}),
    ("{{title}} {{name}}", {"title": "Ms", "name": "Alice"}),
    ("{{ a }}{{a}}{{  a  }}", {"a": "x"}),
    ("No variables at all.", {}),
    ("No variables, extra values given.", {"unused": 1}),
    ("{{ user.name }} from {{ user.address.city }}", {"user.name": "Bob", "user.address.city": "Oslo"}),
    ("{{_private}} and {{ snake_case_2 }}", {"_private": "p", "snake_case_2": "s"}),
    ("Numbers {{n}} {{f}} {{b}} {{none}}", {"n": 3, "f": 0.5, "b": True, "none": None}),
    ("A list {{items}} and a dict {{d}}", {"items": [1, "two"], "d": {"k": "v"}}),
    ("Backslashes stay: {{ path }}", {"path": r"C:\new\table \u0041 \1 \g<0>"}),
    ("Dollar and regex syntax: {{ v }}", {"v": "$1 (.*) [a-z]+ ^$"}),
    ("Unicode: {{ greeting }} {{ emoji }}", {"greeting": "こんにちは", "emoji": "🙂"}),
    ("Triple braces {{{x}}} and {x} and {{ x }}}", {"x": "X"}),
    ("Not a variable: {{ 1abc }} {{ a b }} {{}} {{ }}", {"a": 1}),
    ("Non-identifier keys are replaced as MLflow does: {{ a-b }}", {"a-b": "dash"}),
    ("Multi\nline {{ x }}\n\n{{y}}\n", {"x": "1", "y": "2"}),
    ("{{x}}{{y}}", {"x": "", "y": ""}),
    ("Value with its own name {{ x }}", {"x": "{{ x }}"}),
    ("A single { brace } and }} and {{", {"brace": "no"}),
    ("Long " + "{{ v }} " * 200, {"v": "word"}),
]

CHAT_CASES: list[tuple[list[dict[str, str]], dict[str, Any]]] = [
    ([{"role": "user", "content": "Hello {{ name }}"}], {"name": "Ann"}),
    (
        [
            {"role": "system", "content": "You are a {{style}} assistant."},
            {"role": "user", "content": "{{question}}"},
        ],
        {"style": "friendly", "question": "How are you?"},
    ),
    (
        [
            {"role": "system", "content": "Answer in {{ lang }}."},
            {"role": "user", "content": "Q: {{ q }}"},
            {"role": "assistant", "content": "Sure."},
            {"role": "user", "content": "And in {{ lang }} again: {{ user.name }}"},
        ],
        {"lang": "French", "q": "2+2?", "user.name": "Zoé", "extra": "ignored"},
    ),
    ([{"role": "user", "content": 'Quotes "{{ q }}" and \\ backslash'}], {"q": 'say "hi"'}),
    ([{"role": "user", "content": "No variables"}, {"role": "assistant", "content": ""}], {}),
]


def _mlflow(template: Any) -> Any:
    """MLflow's own PromptVersion for ``template`` (the reference we compare with)."""
    return MlflowPromptVersion("p", 1, template)  # type: ignore[abstract]


def _ours(template: Any, values: dict[str, Any]) -> Any:
    _, normalized = validate_template(template)
    return compile_template(normalized).render(values)


@pytest.mark.parametrize(("template", "values"), TEXT_CASES, ids=range(len(TEXT_CASES)))
def test_text_rendering_matches_mlflow(template: str, values: dict[str, Any]) -> None:
    expected = _mlflow(template).format(**values)
    assert _ours(template, values) == expected


@pytest.mark.parametrize(("template", "values"), CHAT_CASES, ids=range(len(CHAT_CASES)))
def test_chat_rendering_matches_mlflow(template: list[dict[str, str]], values: dict[str, Any]) -> None:
    expected = _mlflow(template).format(**values)
    assert _ours(template, values) == expected


@pytest.mark.parametrize(("template", "values"), [*TEXT_CASES, *CHAT_CASES], ids=range(len(TEXT_CASES + CHAT_CASES)))
def test_variables_match_mlflow(template: Any, values: dict[str, Any]) -> None:
    _, normalized = validate_template(template)
    assert set(compile_template(normalized).variables) == _mlflow(template).variables


@pytest.mark.parametrize(
    ("template", "values", "missing"),
    [
        ("{{ a }} {{ b }} {{ c }}", {"b": 1}, ["a", "c"]),
        ("{{ user.name }}", {"user": {"name": "x"}}, ["user.name"]),
        ([{"role": "system", "content": "{{ s }}"}, {"role": "user", "content": "{{ u }} {{ s }}"}], {}, ["s", "u"]),
    ],
)
def test_missing_variables_name_every_one_like_mlflow(
    template: Any, values: dict[str, Any], missing: list[str]
) -> None:
    with pytest.raises(MlflowException, match="Missing variables"):
        _mlflow(template).format(**values)
    with pytest.raises(InvalidParameter) as caught:
        _ours(template, values)
    assert caught.value.status == 400
    assert caught.value.error_code == "INVALID_PARAMETER_VALUE"
    message = caught.value.message
    assert message.startswith("Missing variables: " + ", ".join(repr(m) for m in missing) + " ")
    given = [k for k in values if k not in missing]
    for name in given:
        assert repr(name) not in message.split("(")[0]


def test_values_are_never_re_expanded() -> None:
    """One pass: a value that looks like a placeholder stays literal. MLflow before 3.18 substituted key
    by key, so a value could be expanded; 3.18 renders in one pass too (the difference is gone)."""
    template = "{{ a }} / {{ b }}"
    values = {"a": "{{ b }}", "b": "secret"}
    assert _ours(template, values) == "{{ b }} / secret"
    mlflow_answer = "{{ b }} / secret" if Version(mlflow.__version__) >= Version("3.18") else "secret / secret"
    assert _mlflow(template).format(**values) == mlflow_answer  # MLflow's answer, on record per version


def test_variables_are_listed_in_first_use_order_without_duplicates() -> None:
    compiled = compile_template("{{ z }} {{ a }} {{ z }} {{ m.n }}")
    assert compiled.variables == ("z", "a", "m.n")


def test_text_template_renders_as_one_user_message() -> None:
    assert compile_template("Hi {{ x }}").render_messages({"x": 1}) == [{"role": "user", "content": "Hi 1"}]


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("", "Field 'template' must not be empty."),
        (3, "Field 'template' must be a string or a list of chat messages, got int."),
        ({"role": "user"}, "Field 'template' must be a string or a list of chat messages, got dict."),
        ([], "Field 'template' is an empty list"),
        (["hi"], "Field 'template[0]' must be an object with 'role' and 'content', got str."),
        ([{"role": "user", "content": "x", "name": "n"}], "Field 'template[0]' has unsupported key(s) ['name']"),
        ([{"content": "x"}], "Field 'template[0].role' must be a non-empty string, got None."),
        ([{"role": "", "content": "x"}], "Field 'template[0].role' must be a non-empty string"),
        (
            [{"role": "user", "content": "ok"}, {"role": "user"}],
            "Field 'template[1].content' must be a string, got NoneType.",
        ),
        ([{"role": "user", "content": ["part"]}], "Field 'template[0].content' must be a string, got list."),
        ("Hello {% if x %}{{ x }}{% endif %}", "Field 'template' uses Jinja2 control syntax"),
        ([{"role": "user", "content": "{% for i in x %}{% endfor %}"}], "Field 'template[0].content' uses Jinja2"),
    ],
)
def test_invalid_templates_are_refused_naming_the_field(template: Any, message: str) -> None:
    with pytest.raises(InvalidParameter) as caught:
        validate_template(template)
    assert caught.value.message.startswith(message)


def test_a_lone_percent_brace_is_plain_text() -> None:
    assert _ours("100% sure {{ x }} {%", {"x": "!"}) == "100% sure ! {%"
