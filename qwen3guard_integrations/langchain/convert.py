"""LangChain objects -> the core's message forms, and model outputs -> text.

The guard objects take strings, ``{"role", "content"}`` dicts and lists of those; this module turns
LangChain inputs (strings, messages, message lists, ``(role, text)`` tuples, ``PromptValue``,
dicts holding one of those under a key) and outputs (``AIMessage``, chunks, strings) into them.
"""

from __future__ import annotations

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

from ..core.errors import InvalidInputError

__all__ = [
    "EMPTY_USER",
    "conversation_of",
    "message_to_dict",
    "output_text",
    "prompt_of",
    "text_of_content",
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


def message_to_dict(message: BaseMessage) -> dict[str, Any]:
    """A LangChain message as a ``{"role", "content"}`` dict the core reads.

    Assistant messages keep only their text (their tool calls are checked apart); other roles
    keep their content as given, so non-text blocks meet the guard's ``non_text`` rule.
    """
    if isinstance(message, ChatMessage):
        return {"role": message.role, "content": message.content}
    for cls, role in _ROLES.items():
        if isinstance(message, cls):
            content = message.text if role == "assistant" else message.content
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
    """The text of a model output: an ``AIMessage`` / chunk, a string, or a message list (its last
    message)."""
    if isinstance(output, str):
        return output
    if isinstance(output, BaseMessage):
        return output.text
    if isinstance(output, Sequence) and output and isinstance(output[-1], BaseMessage):
        return output[-1].text
    raise InvalidInputError(f"cannot read a response from {type(output).__name__}")
