"""gateway.json_depth: the nesting measured on the bytes equals the nesting of the parsed value, strings and
escapes notwithstanding, on both of its paths (pair-removal passes, numpy's running sums); malformed bodies are
measured at least as deep as a parser recurses; the setting is bounded by what orjson can write back."""

from __future__ import annotations

import contextlib
import json
import random
from typing import Any

import orjson
import pytest

from gateway.config import ConfigError, load_settings
from gateway.errors import BadRequest
from gateway.json_depth import MOST_JSON_DEPTH, check_json_depth, json_depth_exceeds

_TRICKY_STRINGS = [
    "", "[", "]]]]", "{[", '"', '\\"[', "\\", "\\\\", '\\\\"[[', "a\nb", "[[[[[[[[[[[[", "é]", "\n", "\t\"]", "\\\n\"",
    "\x01[", "\u00bf/\b\f\r",
]  # fmt: skip


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(item) for item in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(item) for item in value.values()), default=0)
    return 0


def _value(rng: random.Random, levels: int) -> Any:
    if levels == 0 or rng.random() < 0.2:
        return rng.choice([1, 2.5, None, True, *_TRICKY_STRINGS])
    if rng.random() < 0.5:
        return [_value(rng, levels - 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(_TRICKY_STRINGS) + str(i): _value(rng, levels - 1) for i in range(rng.randint(0, 3))}


@pytest.mark.parametrize("seed", range(4))
def test_measured_depth_is_the_parsed_depth(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(3000):
        value = _value(rng, rng.randint(0, 10))
        body = orjson.dumps(value)
        for limit in (1, 2, 3, 5, 8):
            assert json_depth_exceeds(body, limit) == (_depth(value) > limit), (body, limit)


@pytest.mark.parametrize("depth", [63, 64, 65, 200])
def test_large_bodies_take_the_numpy_path(depth: int) -> None:
    """Past 4,096 brackets (and past one numpy block of 2**20), with the deep part in the middle."""
    rows: list[Any] = [[1, "[[[", "]]]]"]] * 300_000
    inner: Any = 0
    for _ in range(depth - 2):
        inner = [inner]
    rows[150_000] = {"deep": inner}
    assert json_depth_exceeds(orjson.dumps(rows), 64) == (depth > 64)


def test_a_typical_chat_body_stops_at_the_bracket_count() -> None:
    body = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "[" * 100}]})
    assert not json_depth_exceeds(body, 4)  # 100 brackets, all in a string: measured, then passed
    assert not json_depth_exceeds(b'{"a": [1, 2]}', 2)


@pytest.mark.parametrize(
    "body",
    [b"[" * 5000, b"[" * 5000 + b"]]", b"]" + b"[" * 5000, b"{" * 100 + b"]" * 100, b"[" * 70 + b'"', b"[" * 70],
)
def test_malformed_bodies_count_as_deep_as_a_parser_goes(body: bytes) -> None:
    assert json_depth_exceeds(body, 64)
    with pytest.raises(BadRequest, match=r"http\.max_json_depth \(64 levels\)"):
        check_json_depth(body, 64)


def test_whatever_passes_the_check_parses_without_recursing_too_deep() -> None:
    """Random bracket soup, much of it thousands of levels deep: a body the check lets through never makes
    json.loads hit Python's recursion limit (it may be malformed: a JSONDecodeError, never a RecursionError)."""
    rng = random.Random(7)
    passed = 0
    for _ in range(2000):
        body = "".join(rng.choice('[[[[[]{}"1,:') for _ in range(rng.randint(0, 3000)))
        if json_depth_exceeds(body.encode(), 64):
            continue
        passed += 1
        with contextlib.suppress(ValueError):  # malformed: fine; a RecursionError is not a ValueError
            json.loads(body)
    assert passed > 100


def test_the_setting_is_bounded_by_what_orjson_writes() -> None:
    value: Any = 0
    for _ in range(MOST_JSON_DEPTH):
        value = [value]
    orjson.dumps(value)  # 254 levels: written back
    with pytest.raises(orjson.JSONEncodeError):
        orjson.dumps([value])
    assert load_settings({"http.max_json_depth": MOST_JSON_DEPTH}, environ={}).http.max_json_depth == 254
    with pytest.raises(ConfigError, match="http.max_json_depth"):
        load_settings({"http.max_json_depth": MOST_JSON_DEPTH + 1}, environ={})
    settings = load_settings({}, environ={"GATEWAY_HTTP_MAX_JSON_BODY_BYTES": "2048"})
    assert settings.http.max_json_body_bytes == 2048
    assert settings.http.max_evaluation_body_bytes == 16 * 1024 * 1024 and settings.http.max_json_depth == 64
