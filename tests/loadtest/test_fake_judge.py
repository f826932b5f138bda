"""The fake upstream's judge mode, driven over HTTP with the official ``openai`` SDK.

A judge request is a chat request with ``response_format.json_schema.name`` = ``judge_<name>``, as the
judges send it (issue 11; tests/loadtest/_judge_requests.py builds it); these tests check
what comes back: scripted markers, the heuristics of the built-in judges on a clear yes and a clear
no, the defaults of custom judges per value schema, and every format knob.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from loadtest.fake_upstream import Recorder
from tests.loadtest._judge_requests import BOOL, ask, fake_judge_client, judge_body, prompt

SCALE = {"type": "integer", "minimum": 1, "maximum": 5}
FLOAT = {"type": "number", "minimum": 0, "maximum": 1}
LABELS = {"type": "string", "enum": ["good", "ok", "bad"]}


@pytest.fixture(scope="module")
def fake() -> Iterator[tuple[openai.OpenAI, Recorder]]:
    with fake_judge_client() as running:
        yield running


@pytest.fixture
def client(fake: tuple[openai.OpenAI, Recorder]) -> openai.OpenAI:
    fake[1].reset()
    return fake[0]


def result(client: openai.OpenAI, judge: str, user: str, schema: dict[str, Any] | None = None, **kw: Any) -> Any:
    return json.loads(ask(client, judge, user, schema, **kw))["result"]


def verdict(client: openai.OpenAI, judge: str, user: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    answer = json.loads(ask(client, judge, user, schema))
    assert set(answer) == {"rationale", "result"} and isinstance(answer["rationale"], str) and answer["rationale"]
    return answer


# --- not a judge call -------------------------------------------------------------------------------------------


def test_a_chat_without_a_judge_schema_is_still_an_echo(client: openai.OpenAI) -> None:
    plain = client.chat.completions.create(
        model="fake-model", messages=[{"role": "user", "content": "hi [[verdict=1]]"}]
    )
    assert plain.choices[0].message.content == "Echo: hi [[verdict=1]]"
    other_schema = client.chat.completions.create(
        model="fake-model",
        messages=[{"role": "user", "content": "hello"}],
        response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": {"type": "object"}}},
    )
    assert other_schema.choices[0].message.content == "Echo: hello"


# --- markers ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("marker", "schema", "expected"),
    [
        ("[[verdict=true]]", BOOL, True),
        ("[[verdict=false]]", BOOL, False),
        ("[[verdict=4]]", SCALE, 4),
        ("[[verdict=0.25]]", FLOAT, 0.25),
        ('[[verdict="bad"]]', LABELS, "bad"),
        ("[[verdict=[1, 2]]]", BOOL, [1, 2]),  # any JSON, a wrong type included
    ],
)
def test_the_every_judge_marker_is_the_result_as_written(
    client: openai.OpenAI, marker: str, schema: dict[str, Any], expected: Any
) -> None:
    answer = verdict(client, "my_custom", prompt(inputs="What is 2+2?", outputs=f"4 {marker}"), schema)
    assert answer["result"] == expected
    assert "[[verdict=...]]" in answer["rationale"]


def test_a_judge_specific_marker_wins_over_the_every_judge_one_in_either_order(client: openai.OpenAI) -> None:
    for text in ("[[verdict=true]] [[verdict.safety=false]]", "[[verdict.safety=false]] [[verdict=true]]"):
        user = prompt(outputs=f"Fine answer. {text}")
        answer = verdict(client, "safety", user)
        assert answer["result"] is False and "[[verdict.safety=...]]" in answer["rationale"]
        assert result(client, "correctness", user) is True  # another judge: the every-judge marker


def test_a_marker_for_another_judge_is_ignored(client: openai.OpenAI) -> None:
    user = prompt(inputs="Say something.", outputs="[[verdict.safety=false]] Hello.")
    assert result(client, "relevance_to_query", user) is True  # the heuristic: a short direct answer
    assert result(client, "tone", user, LABELS) == "good"  # a custom judge's default


def test_a_marker_inside_inputs_rendered_as_json_is_read(client: openai.OpenAI) -> None:
    user = prompt(inputs={"question": 'Rate this [[verdict.tone="ok"]]'}, outputs="Fine.")
    assert '\\"ok\\"' in user  # the quotes arrive escaped
    assert result(client, "tone", user, LABELS) == "ok"


def test_a_marker_in_the_system_message_does_not_count(client: openai.OpenAI) -> None:
    request = judge_body("tone", prompt(outputs="Fine."), LABELS)
    request["messages"][0]["content"] += ' [[verdict="bad"]]'
    completion = client.chat.completions.create(
        model="fake-model", messages=request["messages"], extra_body={"response_format": request["response_format"]}
    )
    assert json.loads(completion.choices[0].message.content or "")["result"] == "good"


# --- defaults for custom judges ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        (BOOL, True),
        (SCALE, 3),
        ({"type": "integer", "minimum": 1, "maximum": 10}, 5),  # midpoint rounded down
        ({"type": "integer", "minimum": 0, "maximum": 100}, 50),
        (FLOAT, 0.5),
        ({"type": "number", "minimum": 1, "maximum": 4}, 2.5),
        (LABELS, "good"),
        ({"type": "string", "enum": ["low", "medium", "high"]}, "low"),
    ],
)
def test_a_custom_judge_gets_the_default_of_its_value_schema(
    client: openai.OpenAI, schema: dict[str, Any], expected: Any
) -> None:
    answer = verdict(client, "house_style", prompt(inputs="q", outputs="a"), schema)
    assert answer["result"] == expected and type(answer["result"]) is type(expected)
    assert "default" in answer["rationale"]


# --- heuristics of the built-in judges --------------------------------------------------------------------------

BOILING = "At what temperature does water boil at sea level?"
BOILING_EXPECTED = {"expected_response": "Water boils at 100 degrees Celsius at sea level."}
HEURISTIC_CASES = [
    ("relevance_to_query", True, prompt(inputs=BOILING, outputs="Water boils at 100 degrees Celsius at sea level.")),
    ("relevance_to_query", True, prompt(inputs={"question": "What is the capital of Australia?"}, outputs="Canberra.")),
    (
        "relevance_to_query",
        False,
        prompt(
            inputs=BOILING,
            outputs="My favourite football team won the league three times in a row, and their new striker "
            "scored twice in the final last spring.",
        ),
    ),
    ("relevance_to_query", False, prompt(inputs=BOILING, outputs="")),
    ("safety", True, prompt(outputs="Water boils at 100 degrees Celsius at sea level.")),
    ("safety", False, prompt(outputs="Only an idiot would ask that. Look it up yourself.")),
    ("safety", False, prompt(outputs="Just mix bleach and ammonia in a closed room and wait.")),
    ("conciseness", True, prompt(inputs=BOILING, outputs="100 °C at sea level.")),
    (
        "conciseness",
        False,
        prompt(inputs=BOILING, outputs="Great question! Water boils at 100 degrees Celsius. I hope this helps."),
    ),
    ("conciseness", False, prompt(inputs=BOILING, outputs=" ".join(["Water boils at 100 degrees."] * 12))),
    (
        "correctness",
        True,
        prompt(inputs=BOILING, outputs="It boils at 100 degrees Celsius.", expectations=BOILING_EXPECTED),
    ),
    (
        "correctness",
        False,
        prompt(inputs=BOILING, outputs="It boils at 90 degrees Celsius.", expectations=BOILING_EXPECTED),
    ),
    (
        "correctness",
        True,
        prompt(
            inputs="Who wrote Hamlet, and when?",
            outputs="William Shakespeare wrote it around 1600.",
            expectations={"expected_facts": ["Shakespeare wrote Hamlet", "around 1600"]},
        ),
    ),
    (
        "correctness",
        False,
        prompt(
            inputs="Who wrote Hamlet, and when?",
            outputs="Christopher Marlowe wrote it around 1600.",
            expectations={"expected_facts": ["Shakespeare wrote Hamlet", "around 1600"]},
        ),
    ),
    (
        "correctness",
        False,
        prompt(
            inputs="Is a tomato a fruit?",
            outputs="No, a tomato is a vegetable.",
            expectations={"expected_response": "Yes, botanically a tomato is a fruit."},
        ),
    ),
    ("correctness", False, prompt(inputs=BOILING, outputs="100 degrees Celsius.")),  # nothing to compare with
    (
        "groundedness",
        True,
        prompt(
            outputs="The warranty lasts 24 months and covers the battery.",
            expectations={"context": ["Our warranty lasts 24 months.", "It covers the battery and the screen."]},
        ),
    ),
    (
        "groundedness",
        False,
        prompt(
            outputs="The warranty lasts 36 months and covers the battery.",
            expectations={"context": "Our warranty lasts 24 months. It covers the battery and the screen."},
        ),
    ),
    (
        "groundedness",
        False,
        prompt(
            outputs="Shipping is free worldwide and arrives overnight by drone.",
            expectations={"context": "Our warranty lasts 24 months. It covers the battery and the screen."},
        ),
    ),
    (
        "guidelines",
        True,
        prompt(
            inputs="Where is my order?",
            outputs="Your order ships tomorrow; see our refund policy for returns.",
            guidelines="The response must mention the refund policy and be polite.\nNever mention competitors.",
        ),
    ),
    (
        "guidelines",
        False,
        prompt(
            inputs="Where is my order?",
            outputs="Your order ships tomorrow.",
            guidelines="The response must mention the refund policy.",
        ),
    ),
    (
        "guidelines",
        False,
        prompt(
            inputs="Where is my order?",
            outputs="It ships tomorrow, faster than Amazon would.",
            guidelines='["Do not mention Amazon.", "Be polite."]',
        ),
    ),
    (
        "guidelines",
        False,
        prompt(
            inputs="Where is my order?",
            outputs="It ships tomorrow, you moron.",
            guidelines="Be polite and professional.",
        ),
    ),
    (
        "guidelines",
        False,
        prompt(
            inputs="Where is my order?",
            outputs="Your order left our warehouse this morning and should arrive within three working days.",
            guidelines="Answer in at most 10 words.",
        ),
    ),
]


def test_instructions_that_name_a_tag_before_its_section_do_not_confuse_the_heuristics(client: openai.OpenAI) -> None:
    user = prompt(
        inputs=BOILING,
        outputs="Water boils at 100 degrees Celsius at sea level.",
        extra="The response is in <outputs> tags; a great question deserves a long answer, I hope this helps.",
    )
    assert result(client, "conciseness", user) is True


@pytest.mark.parametrize(("judge", "expected", "user"), HEURISTIC_CASES)
def test_a_built_in_judge_heuristic_gives_the_clear_verdict(
    client: openai.OpenAI, judge: str, expected: bool, user: str
) -> None:
    answer = verdict(client, judge, user)
    assert answer["result"] is expected, answer["rationale"]


def test_a_heuristic_verdict_takes_the_shape_of_the_value_schema(client: openai.OpenAI) -> None:
    good, bad = prompt(outputs="Water boils at 100 degrees."), prompt(outputs="Shut up, you clown.")
    assert (result(client, "safety", good, SCALE), result(client, "safety", bad, SCALE)) == (5, 1)
    assert (result(client, "safety", good, FLOAT), result(client, "safety", bad, FLOAT)) == (1.0, 0.0)
    yes_no = {"type": "string", "enum": ["no", "yes"]}
    assert (result(client, "safety", good, yes_no), result(client, "safety", bad, yes_no)) == ("yes", "no")
    neither = {"type": "string", "enum": ["fine", "meh", "awful"]}
    assert (result(client, "safety", good, neither), result(client, "safety", bad, neither)) == ("fine", "awful")


# --- format knobs -----------------------------------------------------------------------------------------------

PASSING = prompt(outputs="All fine.")


def test_json_is_the_default_format(client: openai.OpenAI) -> None:
    text = ask(client, "safety", PASSING, model="fake-model@judge_format=json")
    assert json.loads(text)["result"] is True
    assert text == ask(client, "safety", PASSING)


def test_fenced_wraps_the_json_in_a_code_fence(client: openai.OpenAI) -> None:
    text = ask(client, "safety", PASSING, model="fake-model@judge_format=fenced")
    assert text.startswith("```json\n") and text.endswith("\n```")
    assert json.loads(text.removeprefix("```json\n").removesuffix("\n```"))["result"] is True


def test_preamble_puts_prose_before_the_json(client: openai.OpenAI) -> None:
    text = ask(client, "safety", PASSING, fake={"judge_format": "preamble"})
    prose, brace, rest = text.partition("{")
    assert prose.strip() and brace
    assert json.loads(brace + rest)["result"] is True


def test_yes_word_writes_a_boolean_as_yes_or_no(client: openai.OpenAI) -> None:
    knob = {"judge_format": "yes_word"}
    assert result(client, "safety", PASSING, fake=knob) == "Yes"
    assert result(client, "safety", prompt(outputs="You idiot."), fake=knob) == "No"
    assert result(client, "custom", prompt(outputs="x"), SCALE, fake=knob) == 3  # not a boolean: as is


def test_digit_string_writes_a_number_as_a_string(client: openai.OpenAI) -> None:
    knob = {"judge_format": "digit_string"}
    assert result(client, "custom", prompt(outputs="x [[verdict=4]]"), SCALE, fake=knob) == "4"
    assert result(client, "custom", prompt(outputs="x"), FLOAT, fake=knob) == "0.5"


def test_wrong_type_puts_the_result_in_a_list(client: openai.OpenAI) -> None:
    assert result(client, "safety", PASSING, model="fake-model@judge_format=wrong_type") == [True]
    assert result(client, "custom", prompt(outputs="x"), LABELS, model="fake-model@judge_format=wrong_type") == ["good"]


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        (SCALE, 6),
        (FLOAT, 2.0),
        ({"type": "integer", "minimum": 0}, -1),
        (LABELS, "not_one_of_the_labels"),
        (BOOL, 2),
    ],
)
def test_out_of_range_answers_a_value_outside_the_schema(
    client: openai.OpenAI, schema: dict[str, Any], expected: Any
) -> None:
    assert result(client, "custom", prompt(outputs="x"), schema, fake={"judge_format": "out_of_range"}) == expected


def test_no_json_answers_prose_only(client: openai.OpenAI) -> None:
    text = ask(client, "safety", PASSING, model="fake-model@judge_format=no_json")
    assert "{" not in text and text.strip()
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


def test_an_unknown_format_is_a_400_naming_the_knob(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        ask(client, "safety", PASSING, model="fake-model@judge_format=yaml")
    assert "judge_format" in str(caught.value) and "yaml" in str(caught.value)


def test_a_scale_bound_that_is_no_number_is_a_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError):
        ask(client, "custom", PASSING, {"type": "integer", "maximum": "five"}, fake={"judge_format": "out_of_range"})


def test_judge_format_first_applies_the_format_to_the_first_n_judge_calls_only(client: openai.OpenAI) -> None:
    model = "fake-model@judge_format=no_json,judge_format_first=2"
    first, second = ask(client, "safety", PASSING, model=model), ask(client, "safety", PASSING, model=model)
    assert "{" not in first and "{" not in second
    # the repair request: the bad answer and what was wrong appended, the same response_format
    repair = [
        {"role": "assistant", "content": second},
        {"role": "user", "content": "Your answer was not JSON. Answer with the JSON object only."},
    ]
    assert result(client, "safety", PASSING, model=model, messages=repair) is True
    assert result(client, "safety", PASSING, model=model) is True
    # counted per model name: another name starts again
    assert "{" not in ask(client, "safety", PASSING, model=model + ",x=1")


def test_judge_format_first_counts_only_judge_calls(client: openai.OpenAI) -> None:
    model = "fake-model@judge_format=fenced,judge_format_first=1"
    client.chat.completions.create(model=model, messages=[{"role": "user", "content": "an ordinary chat call"}])
    assert ask(client, "safety", PASSING, model=model).startswith("```json")
    assert ask(client, "safety", PASSING, model=model).startswith("{")


# --- the failure knobs work on judge calls ----------------------------------------------------------------------


def test_fail_first_and_retry_after_apply_to_judge_calls(client: openai.OpenAI) -> None:
    model = "fake-model@status=429,fail_first=1,retry_after=2"
    with pytest.raises(openai.RateLimitError) as caught:
        ask(client, "safety", PASSING, model=model)
    assert caught.value.response.headers["retry-after"] == "2"
    assert result(client, "safety", PASSING, model=model) is True


def test_status_applies_to_judge_calls(client: openai.OpenAI, fake: tuple[openai.OpenAI, Recorder]) -> None:
    with pytest.raises(openai.InternalServerError):
        ask(client, "correctness", PASSING, model="fake-model@status=500")
    assert fake[1].judge_calls_by_model == {}  # a failed call is not an answered judge call
