"""Prompt references and names, by MLflow's rules."""

from __future__ import annotations

import pytest

from gateway.errors import InvalidParameter
from prompts.refs import PromptRef, parse_prompt_ref, parse_prompt_version, validate_alias, validate_prompt_name


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("prompts:/qa/3", PromptRef("qa", version=3)),
        ("prompts:/qa@production", PromptRef("qa", alias="production")),
        ("prompts:/qa@latest", PromptRef("qa", alias="latest")),
        ("prompts:/qa@LATEST", PromptRef("qa", alias="latest")),
        ("prompts:/my.prompt-v_2@canary-1", PromptRef("my.prompt-v_2", alias="canary-1")),
        ("qa@production", PromptRef("qa", alias="production")),
        ("qa/12", PromptRef("qa", version=12)),
        ("qa", PromptRef("qa")),
        ("prompts:/qa", PromptRef("qa")),
    ],
)
def test_references_parse(text: str, expected: PromptRef) -> None:
    assert parse_prompt_ref(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("prompts:/qa/latest", "Expected prompts:/NAME/VERSION (a number) or prompts:/NAME@ALIAS"),
        ("prompts:/qa/Production", "Expected prompts:/NAME/VERSION"),
        ("prompts:/qa/0", "Invalid prompt version '0'"),
        ("prompts:/qa/1/2", "Expected prompts:/NAME/VERSION"),
        ("prompts:/qa@", "Expected prompts:/NAME@ALIAS"),
        ("prompts:/qa@a/b", "Expected prompts:/NAME@ALIAS"),
        ("prompts:/@prod", "the name must be 1 to 255 letters"),
        ("prompts:/bad name@prod", "the name must be"),
        ("", "the name must be"),
    ],
)
def test_bad_references_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(InvalidParameter, match="") as caught:
        parse_prompt_ref(text)
    assert message in caught.value.message
    assert repr(text) in caught.value.message or text == ""


@pytest.mark.parametrize("name", ["qa", "Q.A-1_x", "a" * 255, "1"])
def test_valid_names(name: str) -> None:
    assert validate_prompt_name(name) == name


@pytest.mark.parametrize("name", ["", "a b", "a/b", "a@b", "ü", "a" * 256])
def test_invalid_names(name: str) -> None:
    with pytest.raises(InvalidParameter, match="Invalid prompt name"):
        validate_prompt_name(name)


@pytest.mark.parametrize(
    ("alias", "message"),
    [
        ("latest", "reserved"),
        ("Latest", "reserved"),
        ("v1", "Version alias name 'v1' is reserved."),
        ("V22", "reserved"),
        ("a.b", "Invalid alias name"),
        ("", "Invalid alias name"),
    ],
)
def test_reserved_and_invalid_aliases(alias: str, message: str) -> None:
    with pytest.raises(InvalidParameter, match=message):
        validate_alias(alias)


@pytest.mark.parametrize("value", ["0", "-1", "x", "", 1.5, True, None, "1" * 10])
def test_invalid_versions(value: object) -> None:
    with pytest.raises(InvalidParameter, match="expected a positive integer"):
        parse_prompt_version(value)
