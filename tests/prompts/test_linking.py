"""The renderer handed to the LLM proxy: reads the in-memory catalog only, and raises gateway errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import InvalidParameter, NotFound
from gateway.llm.prompt_link import LinkedPrompt
from prompts.cache import PromptCache
from prompts.linking import make_renderer, request_config
from prompts.store import PromptStore


def test_renderer_resolves_and_renders_from_the_cache(tmp_path: Path) -> None:
    store = PromptStore.open(f"sqlite:///{tmp_path}/store.db")
    store.create_version("qa", "Q: {{ q }}", model_config={"model_name": "m1", "temperature": 0, "top_k": 3})
    store.create_version("qa", [{"role": "system", "content": "S {{ q }}"}], response_format={"type": "object"})
    store.set_alias("qa", "production", 1)
    cache = PromptCache(store)
    cache.refresh_sync()
    render = make_renderer(cache)

    linked = render("prompts:/qa@production", {"q": "why", "extra": 1})
    assert linked == LinkedPrompt(
        "qa", 1, [{"role": "user", "content": "Q: why"}], {"model": "m1", "temperature": 0}, None
    )
    latest = render("prompts:/qa@latest", {"q": 1})
    assert (latest.version, latest.messages, latest.response_format) == (
        2,
        [{"role": "system", "content": "S 1"}],
        {"type": "object"},
    )
    assert render("prompts:/qa/1", {"q": 2}).messages == [{"role": "user", "content": "Q: 2"}]
    # Each call gets its own messages list (the proxy extends it).
    assert render("qa@production", {"q": 3}).messages is not render("qa@production", {"q": 3}).messages

    with pytest.raises(InvalidParameter, match="Missing variables: 'q'"):
        render("prompts:/qa@production", {})
    with pytest.raises(NotFound, match="Prompt 'qa' has no alias 'staging'."):
        render("prompts:/qa@staging", {"q": 1})
    with pytest.raises(NotFound, match="Prompt 'qa' has no version 3."):
        render("prompts:/qa/3", {"q": 1})
    with pytest.raises(NotFound, match="Prompt 'nope' not found."):
        render("prompts:/nope@production", {})
    with pytest.raises(InvalidParameter, match="Not a proper prompt reference"):
        render("prompts:/qa/latest", {})

    # The renderer never reads the store: a move is seen only once the cache has refreshed.
    store.set_alias("qa", "production", 2)
    assert render("prompts:/qa@production", {"q": 1}).version == 1
    cache.refresh_sync()
    assert render("prompts:/qa@production", {"q": 1}).version == 2
    store.close()


@pytest.mark.parametrize(
    ("stored", "request_fields"),
    [
        (None, {}),
        (
            {"model_name": "m", "stop_sequences": ["\n"], "max_tokens": 5},
            {"model": "m", "stop": ["\n"], "max_tokens": 5},
        ),
        ({"model": "explicit", "model_name": "mlflow-name"}, {"model": "explicit"}),
        ({"provider": "openai", "top_k": 4, "anthropic_version": "x", "seed": 1}, {"seed": 1}),
        ({"temperature": None, "top_p": 0.5, "presence_penalty": 0.1}, {"top_p": 0.5, "presence_penalty": 0.1}),
    ],
)
def test_model_config_becomes_openai_request_fields(
    stored: dict[str, object] | None, request_fields: dict[str, object]
) -> None:
    assert dict(request_config(stored)) == request_fields
