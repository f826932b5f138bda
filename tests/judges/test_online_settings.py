"""``judges.online`` in the configuration: rules parsed into value objects, every mistake a ConfigError
naming the key, the route check across sections, and the round trip to worker processes."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.config import ConfigError, load_settings, settings_from_dict, settings_to_dict
from gateway.judge_online_settings import OnlineJudge, OnlineRule, OnlineSettings

UPSTREAM = "http://127.0.0.1:9/v1"


def _settings(online: Any, *, capture: bool = True, **judges: Any) -> Any:
    llm = {
        "routes": [
            {"name": "chat", "capture_content": capture, "targets": [{"base_url": UPSTREAM, "model": "m"}]},
            {"name": "quiet", "targets": [{"base_url": UPSTREAM, "model": "m"}]},
        ]
    }
    return load_settings({"llm": llm, "judges": {"online": online, **judges}}, environ={})


def _error(online: Any, **kwargs: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        _settings(online, **kwargs)
    return str(caught.value)


def test_rules_are_parsed() -> None:
    settings = _settings(
        [
            {"route": "chat", "judges": [{"name": "correctness", "rate": 0.1}, {"name": "safety", "rate": "1"}]},
            {"route": "chat", "prompt": "qa", "prompt_alias": "production", "operation": "chat",
             "judges": [{"name": "relevance", "rate": 0}]},
            {"route": "chat", "prompt": "qa", "prompt_version": 3, "judges": [{"name": "relevance", "rate": 0.5}]},
        ],
        online_buffer=50,
        online_batch=10,
        online_flush_interval_s=0.05,
        online_enqueue_timeout_s=1,
    )  # fmt: skip
    online = settings.judges.online
    assert online.rules[0] == OnlineRule("chat", (OnlineJudge("correctness", 0.1), OnlineJudge("safety", 1.0)))
    assert online.rules[1] == OnlineRule(
        "chat", (OnlineJudge("relevance", 0.0),), prompt="qa", prompt_alias="production", operation="chat"
    )
    assert online.rules[2].prompt_version == 3
    assert (online.buffer_size, online.batch_size, online.flush_interval_s, online.enqueue_timeout_s) == (
        50,
        10,
        0.05,
        1.0,
    )
    assert online.rules[1].to_dict() == {
        "route": "chat",
        "prompt": "qa",
        "prompt_alias": "production",
        "operation": "chat",
        "judges": [{"name": "relevance", "rate": 0.0}],
    }


def test_defaults_have_no_rules() -> None:
    settings = load_settings({}, environ={})
    assert settings.judges.online == OnlineSettings()
    assert settings.judges.online.rules == ()


def test_settings_round_trip_for_worker_processes() -> None:
    settings = _settings(
        [{"route": "chat", "prompt": "qa", "prompt_version": 2, "judges": [{"name": "j", "rate": 0.2}]}]
    )
    assert settings_from_dict(settings_to_dict(settings)) == settings


J = [{"name": "j", "rate": 1}]


def _rule(**fields: Any) -> list[dict[str, Any]]:
    """One rule on route chat judged by j at rate 1, with ``fields`` changed."""
    return [{"route": "chat", "judges": J, **fields}]


def _judge(**fields: Any) -> list[dict[str, Any]]:
    """One rule on route chat with one judge ``fields``."""
    return _rule(judges=[fields])


P = "judges.online[0]"


@pytest.mark.parametrize(
    ("online", "message"),
    [
        ({"route": "chat"}, "judges.online: expected a list of rules, got dict."),
        ([{"judges": J}], f"{P}.route: missing"),
        ([{"route": "chat"}], f"{P}.judges: missing"),
        (_rule(judges=[]), f"{P}.judges: expected a non-empty list"),
        (_judge(name="j"), f"{P}.judges[0].rate: missing"),
        (_judge(name="j", rate=1.5), f"{P}.judges[0].rate: 1.5 must be a number between 0 and 1."),
        (_judge(name="j", rate=-0.1), f"{P}.judges[0].rate: -0.1 must be a number >= 0."),
        (_judge(name="j", rate="often"), f"{P}.judges[0].rate: 'often' is not a number."),
        (_judge(name="j", rate=True), f"{P}.judges[0].rate: True is not a number."),
        (_judge(name="9x", rate=1), f"{P}.judges[0].name: '9x' is not a judge name"),
        (_rule(judges=[*J, {"name": "j", "rate": 0.5}]), f"{P}.judges[1].name: 'j' is listed twice"),
        (_judge(name="j", rate=1, weight=2), f"{P}.judges[0]: unknown key(s) weight"),
        (_rule(model="x"), f"{P}: unknown key(s) model"),
        (_rule(operation="embeddings"), f"{P}.operation: 'embeddings' is not one of chat, text_completion."),
        (_rule(prompt_version=2), f"{P}.prompt_version: needs prompt"),
        (_rule(prompt="qa", prompt_version=2, prompt_alias="p"), f"{P}.prompt_alias: give prompt_version or"),
        (_rule(prompt="qa", prompt_version=0), f"{P}.prompt_version: 0 is out of range"),
        (_rule(route="nope"), f"{P}.route: 'nope' is not an LLM route (llm.routes: chat, quiet)."),
    ],
)
def test_bad_rules_name_the_key(online: Any, message: str) -> None:
    assert message in _error(online)


def test_a_route_with_online_judges_must_capture_content() -> None:
    message = _error([{"route": "chat", "judges": [{"name": "j", "rate": 1}]}], capture=False)
    assert message.startswith("judges.online[0].route: route 'chat' has online judges but does not capture content")
    assert "capture_content: true" in message
    message = _error(
        [
            {"route": "chat", "judges": [{"name": "j", "rate": 1}]},
            {"route": "quiet", "judges": [{"name": "j", "rate": 1}]},
        ]
    )
    assert message.startswith("judges.online[1].route: route 'quiet'")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("online_buffer", 0, "judges.online_buffer: 0 is out of range"),
        ("online_batch", "many", "judges.online_batch: 'many' is not an integer."),
        ("online_flush_interval_s", 0, "judges.online_flush_interval_s: 0 must be a number > 0."),
        ("online_enqueue_timeout_s", -1, "judges.online_enqueue_timeout_s: -1 must be a number > 0."),
    ],
)
def test_bad_buffer_settings_name_the_key(key: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _settings([], **{key: value})
    assert message in str(caught.value)
