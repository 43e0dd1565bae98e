"""LangChain objects -> the core's message forms, and model outputs -> text.

The guard objects take strings, ``{"role", "content"}`` dicts and lists of those; this module turns
LangChain inputs (strings, messages, message lists, ``(role, text)`` tuples, ``PromptValue``,
dicts holding one of those under a key) and outputs (``AIMessage``, chunks, strings, structured
outputs) into them.

What a guard reads of a model's output is `response_text`: its reasoning, its text and its tool
calls (`tool_call_text`, calls that did not parse included), or the JSON serialisation of a
structured output (a dict, a list, a pydantic model).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
    convert_to_messages,
)
from langchain_core.prompt_values import PromptValue
from pydantic import BaseModel

from ..core.errors import InvalidInputError

__all__ = [
    "EMPTY_USER",
    "block_reasoning",
    "conversation_of",
    "message_to_dict",
    "output_text",
    "prompt_of",
    "reasoning_of",
    "response_text",
    "structured_text",
    "text_of_content",
    "tool_call_text",
    "tool_calls_text",
]

#: The user turn put before a response checked without its prompt (response checks need one).
EMPTY_USER: dict[str, Any] = {"role": "user", "content": ""}

_ROLES = {
    HumanMessage: "user",
    AIMessage: "assistant",
    SystemMessage: "system",
    ToolMessage: "tool",
}


def text_of_content(content: Any) -> str:
    """The text of a message ``content`` or a streamed token: a string, or the text blocks of a
    content-block list (other blocks carry no text to moderate)."""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence) and not isinstance(content, (bytes, bytearray)):
        parts: list[str] = []
        for block in content:
            if isinstance(block, str):
                parts.append(block)
            elif isinstance(block, Mapping) and block.get("type") == "text":
                text = block.get("text")
                if isinstance(text, str):
                    parts.append(text)
        return "".join(parts)
    return ""


def reasoning_of(message: BaseMessage) -> str:
    """The reasoning text a message carries: ``reasoning`` / ``thinking`` content blocks (and
    their summaries) and ``additional_kwargs["reasoning_content"]``."""
    parts: list[str] = []
    extra = message.additional_kwargs.get("reasoning_content")
    if isinstance(extra, str):
        parts.append(extra)
    content = message.content if isinstance(message.content, list) else []
    for block in content:
        if isinstance(block, Mapping):
            parts.append(block_reasoning(block) or "")
    return "".join(parts)


def block_reasoning(block: Mapping[str, Any]) -> str | None:
    """The reasoning text of one content block (None when it is not a reasoning block)."""
    kind = block.get("type")
    if kind not in ("reasoning", "thinking"):
        return None
    text = block.get(kind)
    if isinstance(text, str):
        return text
    summary = block.get("summary")
    if isinstance(summary, list):
        return "".join(
            s["text"] for s in summary if isinstance(s, Mapping) and isinstance(s.get("text"), str)
        )
    return ""


def tool_call_text(name: str, args: Any) -> str:
    """How a tool call is shown to the guard: its name and JSON arguments."""
    try:
        shown = json.dumps(args, ensure_ascii=False, sort_keys=True, default=str)
    except (TypeError, ValueError):
        shown = str(args)
    return f"Calling tool {name} with arguments {shown}"


def tool_calls_text(message: BaseMessage) -> str:
    """The tool calls of an assistant message as text, invalid ones (arguments that did not
    parse) included; empty when it has none."""
    calls = [tool_call_text(c["name"], c["args"]) for c in getattr(message, "tool_calls", [])]
    calls += [
        tool_call_text(c.get("name") or "unknown", c.get("args") or "")
        for c in getattr(message, "invalid_tool_calls", [])
    ]
    return "\n".join(calls)


def message_to_dict(message: BaseMessage) -> dict[str, Any]:
    """A LangChain message as a ``{"role", "content"}`` dict the core reads.

    Assistant messages keep their text and their tool calls as text (`tool_call_text`; their
    reasoning is left out, as the chat template leaves it out of history); other roles keep
    their content as given, so non-text blocks meet the guard's ``non_text`` rule.
    """
    if isinstance(message, ChatMessage):
        return {"role": message.role, "content": message.content}
    for cls, role in _ROLES.items():
        if isinstance(message, cls):
            if role == "assistant":
                content = _joined(message.text, tool_calls_text(message))
            else:
                content = message.content
            return {"role": role, "content": content}
    raise InvalidInputError(f"cannot check a {type(message).__name__} message")


def _messages(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, PromptValue):
        value = value.to_messages()
    if isinstance(value, BaseMessage) or (isinstance(value, Mapping) and _is_message_dict(value)):
        # one message; convert_to_messages would iterate a dict's keys as messages
        value = [value]
    try:
        msgs = convert_to_messages(value)
    except (ValueError, TypeError, NotImplementedError) as exc:
        raise InvalidInputError(f"cannot read messages from {type(value).__name__}: {exc}") from exc
    return [message_to_dict(m) for m in msgs]


def prompt_of(value: Any, key: str | None = "input") -> str | list[dict[str, Any]]:
    """The prompt held by a chain input: a string, a message list, a ``PromptValue``, a message, or
    a dict holding one of those under ``key``."""
    if isinstance(value, Mapping) and not _is_message_dict(value):
        if key is None or key not in value:
            raise InvalidInputError(
                f"the input dict has no {key!r} key to check (keys: {sorted(map(str, value))})"
            )
        value = value[key]
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        raise InvalidInputError("the prompt must be str, not bytes: decode it first")
    if value is None:
        raise InvalidInputError("nothing to check: the prompt is None")
    return _messages(value)


def conversation_of(value: Any) -> list[dict[str, Any]]:
    """A message list of any accepted form (for checks whose mode follows the last message)."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    return _messages(value)


def _is_message_dict(value: Mapping[str, Any]) -> bool:
    return "role" in value and "content" in value


def output_text(output: Any) -> str:
    """The text of a model output: an ``AIMessage`` / chunk, a string, a message list (its last
    message), or a structured output (`structured_text`)."""
    if isinstance(output, str):
        return output
    if isinstance(output, BaseMessage):
        return output.text
    if isinstance(output, Sequence) and output and isinstance(output[-1], BaseMessage):
        return output[-1].text
    return structured_text(output)


def response_text(output: Any) -> str:
    """Everything a guard checks of a model output: for a message its reasoning, its text and
    its tool calls, one after the other; otherwise `output_text`."""
    if isinstance(output, Sequence) and output and isinstance(output[-1], BaseMessage):
        output = output[-1]
    if isinstance(output, BaseMessage):
        return _joined(reasoning_of(output), output.text, tool_calls_text(output))
    return output_text(output)


def structured_text(output: Any) -> str:
    """A structured output (a dict, a list or tuple, a pydantic model) as the JSON a guard
    checks; an `InvalidInputError` for anything else."""
    if isinstance(output, BaseModel):
        return output.model_dump_json()
    if isinstance(output, (Mapping, list, tuple)):
        try:
            return json.dumps(output, ensure_ascii=False, default=str)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"cannot serialise the output to check it: {exc}") from None
    raise InvalidInputError(f"cannot read a response from {type(output).__name__}")


def _joined(*parts: str) -> str:
    return "\n\n".join(p for p in parts if p)
