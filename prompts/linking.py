"""The renderer the LLM proxy calls for a prompt-linked chat completion.

``gateway.app`` builds it with :func:`make_renderer` over the worker's :class:`PromptCache` and
hands it to the proxy (``gateway.llm`` never imports ``prompts``). It is synchronous and reads
only memory: resolve the reference in the current catalog, render the compiled template.

The prompt's ``model_config`` is stored in MLflow's shape (``model_name``, ``stop_sequences``,
...); the proxy fills request fields from it, so it is translated here into OpenAI request fields
(``model``, ``stop``, ...). Keys that are not OpenAI chat-completion parameters (``provider``,
``top_k``, provider-specific extras) are left out, since an upstream would refuse them.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from gateway.llm.prompt_link import LinkedPrompt, PromptRenderer
from prompts.cache import PromptCache
from prompts.catalog import CachedVersion
from prompts.refs import PromptRef, parse_prompt_ref

# MLflow PromptModelConfig name -> OpenAI chat-completion field.
_RENAMED = {"model_name": "model", "stop_sequences": "stop"}
_OPENAI_FIELDS = frozenset(
    {
        "model",
        "temperature",
        "max_tokens",
        "max_completion_tokens",
        "top_p",
        "frequency_penalty",
        "presence_penalty",
        "stop",
        "seed",
        "n",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "reasoning_effort",
        "parallel_tool_calls",
        "tool_choice",
        "tools",
        "service_tier",
        "user",
    }
)
_MAX_MEMO = 4096


def request_config(model_config: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """The OpenAI request fields a stored ``model_config`` sets (``model`` wins over ``model_name``)."""
    items = [(k, v) for k, v in (model_config or {}).items() if v is not None]
    config = {_RENAMED[k]: v for k, v in items if k in _RENAMED}
    config.update((k, v) for k, v in items if k in _OPENAI_FIELDS)
    return MappingProxyType(config)


def make_renderer(cache: PromptCache) -> PromptRenderer:
    """A renderer over ``cache``: unknown prompt, version or alias -> NotFound (404), a missing
    variable -> InvalidParameter (400) naming every missing one, a malformed reference -> InvalidParameter."""
    refs: dict[str, PromptRef] = {}
    configs: dict[tuple[str, int], Mapping[str, Any]] = {}  # versions are immutable: computed once

    def config_of(cached: CachedVersion) -> Mapping[str, Any]:
        key = (cached.version.name, cached.version.version)
        config = configs.get(key)
        if config is None:
            config = request_config(cached.version.model_config)
            if len(configs) < _MAX_MEMO:
                configs[key] = config
        return config

    def render(ref: str, variables: Mapping[str, Any]) -> LinkedPrompt:
        parsed = refs.get(ref)
        if parsed is None:
            parsed = parse_prompt_ref(ref)
            if len(refs) < _MAX_MEMO:
                refs[ref] = parsed
        cached = cache.catalog.resolve(parsed)
        version = cached.version
        return LinkedPrompt(
            name=version.name,
            version=version.version,
            messages=cached.compiled.render_messages(variables),
            model_config=config_of(cached),
            response_format=version.response_format,
        )

    return render
