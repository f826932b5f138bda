"""The official ``openai`` SDK, sync or async, behind one small interface so every test runs with both."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import openai

T = TypeVar("T")


class SDK:
    """``kind`` is "sync" (openai.OpenAI) or "async" (openai.AsyncOpenAI, one event loop per call)."""

    def __init__(self, kind: str, base_url: str, api_key: str = "unused-when-auth-is-off", **options: Any) -> None:
        self.kind = kind
        self.base_url = base_url
        self.api_key = api_key
        self.options = {"max_retries": 0, "timeout": 30.0, **options}

    def _run(self, call: Callable[[Any], Any]) -> Any:
        if self.kind == "sync":
            with openai.OpenAI(base_url=self.base_url, api_key=self.api_key, **self.options) as client:
                return call(client)

        async def main() -> Any:
            async with openai.AsyncOpenAI(base_url=self.base_url, api_key=self.api_key, **self.options) as client:
                result = call(client)
                return await _settle(result)

        return asyncio.run(main())

    def call(self, call: Callable[[Any], Any]) -> Any:
        """``call(client)`` with an OpenAI client of this kind (its result awaited for the async one)."""
        return self._run(call)

    def responses(self, **kwargs: Any) -> Any:
        return self._run(lambda c: c.responses.create(**kwargs))

    def responses_stream(self, **kwargs: Any) -> list[Any]:
        """Every event the SDK yields for ``responses.create(stream=True)``."""
        return self._run(lambda c: _collect(c.responses.create(stream=True, **kwargs)))

    def chat(self, **kwargs: Any) -> Any:
        return self._run(lambda c: c.chat.completions.create(**kwargs))

    def chat_stream(self, **kwargs: Any) -> list[Any]:
        """Every chunk the SDK yields for a streamed chat completion."""
        return self._run(lambda c: _collect(c.chat.completions.create(stream=True, **kwargs)))

    def completion(self, **kwargs: Any) -> Any:
        return self._run(lambda c: c.completions.create(**kwargs))

    def completion_stream(self, **kwargs: Any) -> list[Any]:
        return self._run(lambda c: _collect(c.completions.create(stream=True, **kwargs)))

    def embeddings(self, **kwargs: Any) -> Any:
        return self._run(lambda c: c.embeddings.create(**kwargs))

    def model_ids(self) -> list[str]:
        return self._run(lambda c: _model_ids(c.models.list()))


async def _settle(value: Any) -> Any:
    while isinstance(value, Awaitable):
        value = await value
    return value


def _collect(stream: Any) -> Any:
    """A list of chunks from a sync stream, or a coroutine producing it from an async one."""
    if isinstance(stream, Awaitable):

        async def gather() -> list[Any]:
            chunks = []
            async for chunk in await stream:
                chunks.append(chunk)
            return chunks

        return gather()
    return list(stream)


def _model_ids(page: Any) -> Any:
    if isinstance(page, Awaitable) or hasattr(page, "__aiter__"):

        async def gather() -> list[str]:
            return [model.id async for model in page]

        return gather()
    return [model.id for model in page]


SDK_KINDS = ("sync", "async")
