"""Judge requests as the judges send them (issue 11), and the fake upstream to send them to.

The built-in instructions wrap each field in its tag; inputs and outputs are text when they are
strings, else JSON; expectations are JSON. The fake upstream's judge mode (loadtest/fake_judge.py)
reads those tags.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import openai

from loadtest.fake_upstream import Recorder
from loadtest.fake_upstream import create_app as create_fake_app
from tests.servers import run_app_in_thread

BOOL = {"type": "boolean"}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def prompt(
    inputs: Any = None, outputs: Any = None, expectations: Any = None, guidelines: str | None = None, extra: str = ""
) -> str:
    """A judge's user message as the built-in instructions render it: each field given, in its tag."""
    parts = [extra] if extra else []
    for tag, value in (("inputs", inputs), ("outputs", outputs), ("guidelines", guidelines)):
        if value is not None:
            parts.append(f"<{tag}>\n{_text(value)}\n</{tag}>")
    if expectations is not None:
        parts.append(f"<expectations>\n{json.dumps(expectations)}\n</expectations>")
    return "Judge the response.\n\n" + "\n".join(parts)


def judge_body(judge: str, user: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """The chat body of a call to judge ``judge`` (without its model)."""
    return {
        "temperature": 0,
        "messages": [{"role": "system", "content": "You are a judge."}, {"role": "user", "content": user}],
        "response_format": {
            "type": "json_schema",
            "json_schema": {
                "name": f"judge_{judge}",
                "strict": True,
                "schema": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["rationale", "result"],
                    "properties": {"rationale": {"type": "string"}, "result": schema or BOOL},
                },
            },
        },
    }


def ask(
    client: openai.OpenAI,
    judge: str,
    user: str,
    schema: dict[str, Any] | None = None,
    *,
    model: str = "fake-model",
    fake: dict[str, Any] | None = None,
    messages: list[dict[str, Any]] | None = None,
) -> str:
    """The verdict text of one judge call (``messages`` appended after the judge's own, as a repair does)."""
    request = judge_body(judge, user, schema)
    extra: dict[str, Any] = {"response_format": request["response_format"]}
    if fake is not None:
        extra["fake"] = fake
    completion = client.chat.completions.create(
        model=model, messages=request["messages"] + (messages or []), temperature=0, extra_body=extra
    )
    content = completion.choices[0].message.content
    assert content is not None
    assert completion.usage is not None and completion.usage.completion_tokens == len(content.split())
    return content


@contextmanager
def fake_judge_client() -> Iterator[tuple[openai.OpenAI, Recorder]]:
    """The fake upstream under uvicorn on loopback, and an openai client for it (no SDK retries)."""
    recorder = Recorder()
    with run_app_in_thread(create_fake_app(recorder)) as base_url:
        client = openai.OpenAI(base_url=base_url + "/v1", api_key="sk-fake", max_retries=0, timeout=10)
        try:
            yield client, recorder
        finally:
            client.close()
