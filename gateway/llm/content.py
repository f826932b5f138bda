"""Opt-in message content for spans: OpenAI bodies -> ``gen_ai.input.messages`` / ``gen_ai.output.messages``.

The GenAI conventions describe messages as ``{"role", "parts": [{"type": "text", "content"}, {"type":
"tool_call", "id", "name", "arguments"}, {"type": "tool_call_response", "id", "response"}]}`` (output
messages add ``finish_reason``). On spans they are JSON strings, cut to ``capture_max_chars``.
Only called when capture is on, so none of this runs on the default hot path.
"""

from __future__ import annotations

from typing import Any

import orjson


def to_text(content: Any) -> str:
    """The text of a message's content: a string as is, the text parts of a list of parts joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return "" if content is None else str(content)


def _text_parts(content: Any) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "content": content}]
    parts: list[dict[str, Any]] = []
    if isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text":
                parts.append({"type": "text", "content": part.get("text", "")})
            elif isinstance(part, dict):
                parts.append({"type": str(part.get("type", "unknown"))})
            else:
                parts.append({"type": "text", "content": str(part)})
    return parts


def _tool_call_parts(tool_calls: Any) -> list[dict[str, Any]]:
    parts = []
    for call in tool_calls if isinstance(tool_calls, list) else []:
        if not isinstance(call, dict):
            continue
        function = call.get("function") or {}
        name, arguments = function.get("name"), function.get("arguments")
        parts.append({"type": "tool_call", "id": call.get("id"), "name": name, "arguments": arguments})
    return parts


def input_messages(operation: str, data: dict[str, Any]) -> list[dict[str, Any]]:
    """The request's input as GenAI messages (chat messages, a completion prompt or embedding inputs)."""
    if operation == "chat":
        messages = []
        for message in data.get("messages") or []:
            if not isinstance(message, dict):
                continue
            role = message.get("role", "user")
            if role == "tool":
                response = message.get("content")
                parts = [{"type": "tool_call_response", "id": message.get("tool_call_id"), "response": response}]
            else:
                parts = _text_parts(message.get("content")) + _tool_call_parts(message.get("tool_calls"))
            messages.append({"role": role, "parts": parts})
        return messages
    key = "prompt" if operation == "text_completion" else "input"
    value = data.get(key)
    texts = value if isinstance(value, list) else [value]
    parts = [{"type": "text", "content": t if isinstance(t, str) else orjson.dumps(t).decode()} for t in texts]
    return [{"role": "user", "parts": parts}]


def output_messages_from_response(operation: str, data: dict[str, Any]) -> list[dict[str, Any]]:
    """A non-streamed answer's choices as GenAI output messages."""
    messages = []
    for choice in data.get("choices") or []:
        if not isinstance(choice, dict):
            continue
        if operation == "chat":
            message = choice.get("message") or {}
            parts = _text_parts(message.get("content")) + _tool_call_parts(message.get("tool_calls"))
            role = message.get("role", "assistant")
        else:
            parts = _text_parts(choice.get("text"))
            role = "assistant"
        messages.append({"role": role, "parts": parts, "finish_reason": choice.get("finish_reason")})
    return messages


def to_attribute_text(messages: list[dict[str, Any]], max_chars: int) -> tuple[str, bool]:
    """The messages' JSON cut to ``max_chars``, and whether it was cut."""
    text = orjson.dumps(messages).decode()
    return (text, False) if len(text) <= max_chars else (text[:max_chars], True)


# MLflow's trace list shows a request and a response column: MLflow fills them from the root span's
# ``mlflow.spanInputs`` / ``mlflow.spanOutputs`` (else from gen_ai.input.messages / output.messages as they
# are, so the column would show the conventions' JSON). It picks the last user message out of
# ``{"messages": [{"role", "content"}]}`` and the answer out of ``{"choices": [{"message": ...}]}``: the
# OpenAI chat shapes, which its chat view also renders. The proxy's SERVER span carries these when capture
# is on (gateway/llm/call_record.py), built from the GenAI messages already captured.


def _openai_message(message: dict[str, Any]) -> dict[str, Any]:
    """A GenAI message as an OpenAI chat message: its text parts joined, tool calls and a tool's answer kept."""
    texts: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    out: dict[str, Any] = {"role": message.get("role", "user")}
    for part in message.get("parts") or ():
        kind = part.get("type")
        if kind == "text":
            texts.append(str(part.get("content", "")))
        elif kind == "tool_call":
            arguments = part.get("arguments")
            if not isinstance(arguments, str):
                arguments = orjson.dumps(arguments).decode()
            function = {"name": part.get("name"), "arguments": arguments}
            tool_calls.append({"id": part.get("id"), "type": "function", "function": function})
        elif kind == "tool_call_response":
            response = part.get("response")
            texts.append(response if isinstance(response, str) else orjson.dumps(response).decode())
            out["tool_call_id"] = part.get("id")
    out["content"] = "\n".join(texts)
    if tool_calls:
        out["tool_calls"] = tool_calls
    return out


def mlflow_inputs(messages: list[dict[str, Any]], max_chars: int) -> str:
    """``mlflow.spanInputs``: the input messages as an OpenAI chat request's ``messages``, cut to ``max_chars``."""
    text = orjson.dumps({"messages": [_openai_message(m) for m in messages]}).decode()
    return text[:max_chars]


def mlflow_outputs(messages: list[dict[str, Any]], max_chars: int) -> str:
    """``mlflow.spanOutputs``: the output messages as an OpenAI chat answer's ``choices``, cut to ``max_chars``."""
    choices = [
        {"index": i, "message": _openai_message(m), "finish_reason": m.get("finish_reason")}
        for i, m in enumerate(messages)
    ]
    return orjson.dumps({"choices": choices}).decode()[:max_chars]
