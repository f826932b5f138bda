"""Prompt-linked chat calls: a body with ``"prompt": {"ref": "prompts:/qa@production", "variables": {...}}``.

``gateway.llm`` never imports ``prompts``: ``gateway.app`` hands the proxy a :data:`PromptRenderer`
built by the prompts package (it reads an in-memory cache, so it is synchronous and cheap). The
rendered messages go before the request's own ``messages``; the prompt's model config and
response format fill only what the request leaves unset.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.errors import GatewayError
from gateway.llm.errors import InvalidRequestError, from_gateway_error


@dataclass(frozen=True, slots=True)
class LinkedPrompt:
    name: str
    version: int
    messages: list[dict[str, Any]]  # rendered chat messages (a text prompt is one "user" message)
    model_config: Mapping[str, Any]  # e.g. model, temperature, max_tokens: applied where the request is silent
    response_format: Any | None  # applied where the request is silent


PromptRenderer = Callable[[str, Mapping[str, Any]], LinkedPrompt]  # (ref like "prompts:/qa@production", variables)


def apply_prompt(body: dict[str, Any], renderer: PromptRenderer | None) -> LinkedPrompt:
    """Render ``body["prompt"]`` into ``body`` in place (and drop the key); the prompt used is returned."""
    spec = body.pop("prompt")
    if renderer is None:
        raise InvalidRequestError(
            "prompt registry not available: this gateway was started without prompts, so 'prompt' cannot be used.",
            code="prompt_registry_unavailable",
        )
    if not isinstance(spec, Mapping):
        raise InvalidRequestError(f"'prompt' must be an object with 'ref' and 'variables', got {type(spec).__name__}.")
    ref = spec.get("ref")
    if not isinstance(ref, str) or not ref:
        raise InvalidRequestError("'prompt.ref' must be a prompt reference such as 'prompts:/qa@production'.")
    unknown = sorted(set(spec) - {"ref", "variables"})
    if unknown:
        raise InvalidRequestError(f"'prompt' has unknown key(s) {', '.join(unknown)}; expected 'ref' and 'variables'.")
    variables = spec.get("variables") or {}
    if not isinstance(variables, Mapping):
        raise InvalidRequestError(f"'prompt.variables' must be an object, got {type(variables).__name__}.")
    own_messages = body.get("messages", [])
    if not isinstance(own_messages, list):
        raise InvalidRequestError(f"'messages' must be a list, got {type(own_messages).__name__}.")
    try:
        linked = renderer(ref, variables)
    except GatewayError as exc:
        raise from_gateway_error(exc) from None
    body["messages"] = [*linked.messages, *own_messages]
    for key, value in linked.model_config.items():
        if key not in body:
            body[key] = value
    if linked.response_format is not None and "response_format" not in body:
        body["response_format"] = linked.response_format
    return linked
