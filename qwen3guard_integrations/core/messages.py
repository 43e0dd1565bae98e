"""Message normalisation: the one place where user input becomes a checked message list.

Accepted forms: a string (one user turn), a ``{"role", "content"}`` dict, a `Message`, or a
list of those. Content may be a string or a list of content blocks (``{"type": "text", "text":
...}`` or plain strings). Adapters convert framework objects into these forms first.
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from .errors import InvalidInputError
from .labels import Role

__all__ = [
    "DEFAULT_IGNORABLE_RANGES",
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


def _tool_calls_text(item: Mapping[str, Any]) -> str:
    """The tool calls of an assistant turn without content (``content: None``), one per line as
    ``name(arguments)``: OpenAI ``tool_calls`` / ``function_call`` or LangChain ``name`` /
    ``args`` dicts. A turn with no readable call is empty text (history only: an empty last
    message is still rejected)."""
    calls = item.get("tool_calls")
    if calls is None and isinstance(item.get("function_call"), Mapping):
        calls = [{"function": item["function_call"]}]
    if calls is None:
        return ""
    if not isinstance(calls, Sequence) or isinstance(calls, (str, bytes, bytearray)):
        raise InvalidInputError("'tool_calls' must be a list of tool calls")
    lines: list[str] = []
    for call in calls:
        if not isinstance(call, Mapping):
            raise InvalidInputError(f"a tool call must be a dict, not {type(call).__name__}")
        fn = call.get("function")
        spec: Mapping[str, Any] = fn if isinstance(fn, Mapping) else call
        name = spec.get("name", "")
        args = spec.get("arguments", spec.get("args", ""))
        if not isinstance(args, str):
            args = json.dumps(args, ensure_ascii=False, sort_keys=True, default=str)
        name = check_text(name if isinstance(name, str) else str(name), allow_empty=True)
        lines.append(f"{name}({check_text(args, what='tool call arguments', allow_empty=True)})")
    return "\n".join(lines)


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
        name = _ROLE_ALIASES[role.lower()]
        content = item["content"]
        if content is None and name == "assistant":
            # an OpenAI-style tool-call turn: its calls, as text, are what it said
            return Message(role=name, content=_tool_calls_text(item))
        return Message(role=name, content=_content_text(content, non_text))
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


#: Unicode's Default_Ignorable_Code_Point property (DerivedCoreProperties.txt, Unicode 15.1/16.0),
#: as inclusive code point ranges. ``unicodedata`` does not expose this property, so it is kept
#: here as data: characters a renderer shows as nothing (joiners, variation selectors, fillers,
#: tags, bidi controls), whatever their general category.
DEFAULT_IGNORABLE_RANGES: tuple[tuple[int, int], ...] = (
    (0x00AD, 0x00AD),  # SOFT HYPHEN
    (0x034F, 0x034F),  # COMBINING GRAPHEME JOINER
    (0x061C, 0x061C),  # ARABIC LETTER MARK
    (0x115F, 0x1160),  # HANGUL CHOSEONG FILLER..HANGUL JUNGSEONG FILLER
    (0x17B4, 0x17B5),  # KHMER VOWEL INHERENT AQ..AA
    (0x180B, 0x180F),  # MONGOLIAN FREE VARIATION SELECTORS, MONGOLIAN VOWEL SEPARATOR
    (0x200B, 0x200F),  # ZERO WIDTH SPACE..RIGHT-TO-LEFT MARK
    (0x202A, 0x202E),  # LEFT-TO-RIGHT EMBEDDING..RIGHT-TO-LEFT OVERRIDE
    (0x2060, 0x206F),  # WORD JOINER..NOMINAL DIGIT SHAPES (2065 reserved)
    (0x3164, 0x3164),  # HANGUL FILLER
    (0xFE00, 0xFE0F),  # VARIATION SELECTOR-1..16
    (0xFEFF, 0xFEFF),  # ZERO WIDTH NO-BREAK SPACE
    (0xFFA0, 0xFFA0),  # HALFWIDTH HANGUL FILLER
    (0xFFF0, 0xFFF8),  # reserved
    (0x1BCA0, 0x1BCA3),  # SHORTHAND FORMAT LETTER OVERLAP..UP STEP
    (0x1D173, 0x1D17A),  # MUSICAL SYMBOL BEGIN BEAM..END PHRASE
    (0xE0000, 0xE0FFF),  # LANGUAGE TAG, TAG characters, VARIATION SELECTOR-17..256, reserved
)


@functools.cache
def _format_chars() -> re.Pattern[str]:
    """Default_Ignorable_Code_Point plus every other format (Cf) character."""
    ranges = [
        re.escape(chr(a)) + ("" if a == b else "-" + re.escape(chr(b)))
        for a, b in DEFAULT_IGNORABLE_RANGES
    ]
    ignorable = {c for a, b in DEFAULT_IGNORABLE_RANGES for c in range(a, b + 1)}
    extra = [
        chr(c)
        for c in range(0x110000)
        if c not in ignorable and unicodedata.category(chr(c)) == "Cf"
    ]
    return re.compile("[" + "".join(ranges) + "".join(re.escape(ch) for ch in extra) + "]")


def normalize_unicode(text: str, mode: UnicodeNormalization) -> str:
    """The text a guard reads, with Unicode disguises taken off.

    ``"none"`` leaves it as written. ``"format"`` removes characters a reader does not see:
    Unicode's Default_Ignorable_Code_Point set (zero-width spaces and joiners, soft hyphens,
    the combining grapheme joiner, variation selectors, Mongolian free variation selectors,
    Hangul fillers, tag characters, bidi controls, BOMs) and every other format character
    (category Cf), which split a word for the model but not for a human reader. ``"nfkc"`` also applies NFKC, which folds
    full-width, mathematical and other compatibility letters into plain ones (and full-width CJK
    punctuation into ASCII, which is why it is not the default). Homoglyphs from other scripts
    (a Cyrillic "а" for a Latin "a") are not folded.
    """
    if mode == "none":
        return text
    if mode not in ("format", "nfkc"):
        raise InvalidInputError(f"normalize must be 'none', 'format' or 'nfkc', not {mode!r}")
    out = _format_chars().sub("", text)
    if mode == "nfkc":
        # NFKC can map a compatibility character onto an ignorable one (U+3164 -> U+1160)
        out = _format_chars().sub("", unicodedata.normalize("NFKC", out))
    return out


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
