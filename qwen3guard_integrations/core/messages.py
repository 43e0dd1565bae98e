"""Message normalisation: the one place where user input becomes a checked message list.

Accepted forms: a string (one user turn), a ``{"role", "content"}`` dict, a `Message`, or a
list of those. Content may be a string or a list of content blocks (``{"type": "text", "text":
...}`` or plain strings). Adapters convert framework objects into these forms first.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from .errors import InvalidInputError
from .labels import Role

__all__ = [
    "Message",
    "MessageLike",
    "MessagesInput",
    "UnicodeNormalization",
    "check_text",
    "moderation_role",
    "normalize_conversation",
    "normalize_messages",
    "normalize_unicode",
    "prompt_messages",
    "response_messages",
]

MessageRole = Literal["system", "user", "assistant", "tool"]

_ROLE_ALIASES: dict[str, MessageRole] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "ai": "assistant",
    "model": "assistant",
    "tool": "tool",
}


class Message(BaseModel):
    """One conversation turn with plain-text content."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: MessageRole
    content: str

    def as_dict(self) -> dict[str, str]:
        """``{"role": ..., "content": ...}`` as chat templates expect it."""
        return {"role": self.role, "content": self.content}


MessageLike = str | Message | Mapping[str, Any]
MessagesInput = MessageLike | Sequence[MessageLike]


def check_text(text: object, *, what: str = "text", allow_empty: bool = False) -> str:
    """Return ``text`` when it is a checkable string; raise `InvalidInputError` otherwise.

    Rejects non-strings (bytes included: decode them yourself), strings that are not valid
    Unicode (lone surrogates cannot be tokenized) and, unless ``allow_empty``, blank text.
    """
    if isinstance(text, (bytes, bytearray, memoryview)):
        raise InvalidInputError(f"{what} must be str, not bytes: decode it first")
    if not isinstance(text, str):
        raise InvalidInputError(f"{what} must be str, not {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInputError(
            f"{what} is not valid Unicode (lone surrogate at index {exc.start})"
        ) from None
    if not allow_empty and not text.strip():
        raise InvalidInputError(f"{what} is empty")
    return text


def _content_text(content: object, non_text: Literal["error", "skip"]) -> str:
    if isinstance(content, str):
        return check_text(content, what="message content", allow_empty=True)
    if isinstance(content, Sequence) and not isinstance(content, (bytes, bytearray)):
        parts: list[str] = []
        for block in content:
            if isinstance(block, str):
                parts.append(check_text(block, what="content block", allow_empty=True))
            elif isinstance(block, Mapping) and block.get("type") == "text":
                parts.append(check_text(block.get("text"), what="text block", allow_empty=True))
            elif non_text == "skip":
                continue
            else:
                kind = block.get("type") if isinstance(block, Mapping) else type(block).__name__
                raise InvalidInputError(
                    f"content block of type {kind!r} cannot be checked by a text guard "
                    "(pass non_text='skip' to check only the text blocks)"
                )
        return "".join(parts)
    return check_text(content, what="message content", allow_empty=True)


def _one(item: MessageLike, non_text: Literal["error", "skip"]) -> Message:
    if isinstance(item, Message):
        check_text(item.content, what="message content", allow_empty=True)
        return item
    if isinstance(item, str):
        return Message(role="user", content=check_text(item, what="message content"))
    if isinstance(item, Mapping):
        if "role" not in item or "content" not in item:
            raise InvalidInputError("a message dict needs 'role' and 'content' keys")
        role = item["role"]
        if not isinstance(role, str) or role.lower() not in _ROLE_ALIASES:
            raise InvalidInputError(
                f"invalid role {role!r}; expected one of system, user, assistant, tool"
            )
        return Message(
            role=_ROLE_ALIASES[role.lower()], content=_content_text(item["content"], non_text)
        )
    raise InvalidInputError(
        f"cannot read a message from {type(item).__name__}; pass str, a role/content dict or a list"
    )


def normalize_messages(
    messages: MessagesInput, *, non_text: Literal["error", "skip"] = "error"
) -> list[Message]:
    """Turn any accepted input form into a non-empty list of `Message`."""
    if messages is None:
        raise InvalidInputError("nothing to check: got None")
    if isinstance(messages, (str, Message, Mapping)):
        items: Sequence[MessageLike] = [messages]
    elif isinstance(messages, (bytes, bytearray, memoryview)):
        raise InvalidInputError("messages must be str or a list, not bytes: decode them first")
    elif isinstance(messages, Sequence):
        items = messages
    else:
        raise InvalidInputError(f"cannot read messages from {type(messages).__name__}")
    out = [_one(m, non_text) for m in items]
    if not out:
        raise InvalidInputError("nothing to check: the message list is empty")
    return out


def moderation_role(messages: Sequence[Message]) -> Role:
    """The moderation mode the last message selects (SPEC section 2), with the input checked.

    Last = user -> prompt; last = assistant -> response (a user turn must come before it).
    """
    if not messages:
        raise InvalidInputError("nothing to check: the message list is empty")
    last = messages[-1]
    if not last.content.strip():
        raise InvalidInputError(f"the last message ({last.role}) is empty")
    if last.role == "user":
        return Role.PROMPT
    if last.role == "assistant":
        if not any(m.role == "user" for m in messages[:-1]):
            raise InvalidInputError(
                "response moderation needs the user turn the response answers; got an "
                "assistant message without a user message before it"
            )
        return Role.RESPONSE
    raise InvalidInputError(
        f"the last message must be from the user (prompt check) or the assistant "
        f"(response check), not {last.role!r}"
    )


def prompt_messages(prompt: MessagesInput, **kwargs: Any) -> list[Message]:
    """Normalise ``prompt`` and require that it ends with a user turn."""
    msgs = normalize_messages(prompt, **kwargs)
    if moderation_role(msgs) is not Role.PROMPT:
        raise InvalidInputError("a prompt check needs the conversation to end with a user turn")
    return msgs


def response_messages(
    prompt: MessagesInput | None, response: MessagesInput | None = None, **kwargs: Any
) -> list[Message]:
    """The conversation for a response check: ``prompt`` then ``response``.

    With ``response=None``, ``prompt`` must already be a message list ending with the
    assistant turn. A string ``response`` becomes the assistant turn.
    """
    if response is None:
        msgs = normalize_messages(prompt, **kwargs) if prompt is not None else []
    else:
        before = normalize_messages(prompt, **kwargs) if prompt is not None else []
        if isinstance(response, str):
            after = [Message(role="assistant", content=check_text(response, what="response"))]
        else:
            after = normalize_messages(response, **kwargs)
        msgs = before + after
    if not msgs:
        raise InvalidInputError("nothing to check: no response given")
    if moderation_role(msgs) is not Role.RESPONSE:
        raise InvalidInputError(
            "a response check needs the conversation to end with an assistant turn"
        )
    return msgs


#: How the guards may normalise text before the model reads it (see `normalize_unicode`).
UnicodeNormalization = Literal["none", "format", "nfkc"]


@functools.cache
def _format_chars() -> re.Pattern[str]:
    chars = (chr(c) for c in range(0x110000) if unicodedata.category(chr(c)) == "Cf")
    return re.compile("[" + "".join(re.escape(ch) for ch in chars) + "]")


def normalize_unicode(text: str, mode: UnicodeNormalization) -> str:
    """The text a guard reads, with Unicode disguises taken off.

    ``"none"`` leaves it as written. ``"format"`` removes invisible format characters (Unicode
    category Cf: zero-width spaces and joiners, soft hyphens, bidi controls, BOMs), which split a
    word for the model but not for a human reader. ``"nfkc"`` also applies NFKC, which folds
    full-width, mathematical and other compatibility letters into plain ones (and full-width CJK
    punctuation into ASCII, which is why it is not the default). Homoglyphs from other scripts
    (a Cyrillic "а" for a Latin "a") are not folded.
    """
    if mode == "none":
        return text
    if mode not in ("format", "nfkc"):
        raise InvalidInputError(f"normalize must be 'none', 'format' or 'nfkc', not {mode!r}")
    out = _format_chars().sub("", text)
    return unicodedata.normalize("NFKC", out) if mode == "nfkc" else out


def normalize_conversation(
    messages: Sequence[Message], mode: UnicodeNormalization
) -> tuple[Message, ...]:
    """`normalize_unicode` over each message's text (a text made blank by it is kept as
    written)."""
    if mode == "none":
        return tuple(messages)
    out = []
    for m in messages:
        text = normalize_unicode(m.content, mode)
        out.append(
            m if text == m.content or not text.strip() else m.model_copy(update={"content": text})
        )
    return tuple(out)
