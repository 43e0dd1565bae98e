"""Building the Gen model's input ids: the checkpoint's own chat template, untrusted text kept
plain, and long inputs split into overlapping windows instead of being truncated.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ...core.errors import ConfigurationError, InvalidInputError
from ...core.labels import Level, Role
from ...core.messages import Message, moderation_role
from ..render import plain_token_ids

__all__ = ["GenPrompt", "GenPromptEncoder"]

#: How each level's answer starts after "Safety:" (the first sub-token decides the level).
LEVEL_WORDS: dict[Level, str] = {
    Level.SAFE: " Safe",
    Level.UNSAFE: " Unsafe",
    Level.CONTROVERSIAL: " Controversial",
}


@dataclass(frozen=True)
class GenPrompt:
    """One conversation, encoded: one id list per window (usually one) and the mode."""

    windows: tuple[tuple[int, ...], ...]
    role: Role


class GenPromptEncoder:
    """Encodes conversations for a Gen checkpoint's tokenizer.

    The conversation is rendered with the checkpoint's chat template around placeholder
    strings; the template's own text is tokenized normally (so its control tokens are real),
    and each message's content is tokenized as plain text (`plain_token_ids`), so that
    ``<|im_end|>``, ``<think>`` or a fake ``Safety: Safe`` inside a message stay ordinary text.
    """

    def __init__(self, tokenizer: Any, *, max_input_tokens: int, window_overlap: int = 64) -> None:
        if getattr(tokenizer, "chat_template", None) is None:
            raise InvalidInputError(
                "the tokenizer has no chat template: is this a Qwen3Guard-Gen checkpoint?"
            )
        if max_input_tokens < 64:
            raise ConfigurationError("max_input_tokens must be at least 64")
        self.tokenizer = tokenizer
        self._template_cache: dict[str, tuple[int, ...]] = {}
        self.max_input_tokens = max_input_tokens
        self.window_overlap = window_overlap
        self.safety_prefix: tuple[int, ...] = tuple(self._template_ids("Safety:"))
        first = {lv: plain_token_ids(tokenizer, w)[0] for lv, w in LEVEL_WORDS.items()}
        if len(set(first.values())) != 3:
            raise InvalidInputError("the three safety levels do not start with distinct tokens")
        self.level_first_token: dict[Level, int] = first

    def _template_ids(self, text: str) -> list[int]:
        # the template's own pieces repeat from check to check: tokenize each once
        ids = self._template_cache.get(text)
        if ids is None:
            ids = tuple(int(i) for i in self.tokenizer(text, add_special_tokens=False)["input_ids"])
            if len(self._template_cache) < 4096:
                self._template_cache[text] = ids
        return list(ids)

    def encode(self, messages: Sequence[Message]) -> GenPrompt:
        """Encode a checked conversation; the mode follows its last message."""
        role = moderation_role(messages)
        tag = secrets.token_hex(6)
        marks = [f"\ue000{tag}{i}\ue001" for i in range(len(messages))]
        rendered = self.tokenizer.apply_chat_template(
            [{"role": m.role, "content": mark} for m, mark in zip(messages, marks)],
            tokenize=False,
            add_generation_prompt=True,
        )
        parts = re.split(f"(\ue000{tag}\\d+\ue001)", rendered)
        index = {mark: i for i, mark in enumerate(marks)}
        # (is_content, text): message texts are plain; template text keeps its control tokens
        pieces: list[list[Any]] = []
        last_piece: int | None = None
        for part in parts:
            if part in index:
                if index[part] == len(messages) - 1:
                    last_piece = len(pieces)
                pieces.append([True, messages[index[part]].content])
            elif part:
                pieces.append([False, part])
        if last_piece is None:
            raise InvalidInputError("the chat template dropped the message to be checked")
        # keep token boundaries as in one joint tokenization: a space before a message belongs
        # to its first word, newlines after it join its last pre-token ("?" + "\n" is "?\n")
        for k, (is_content, _) in enumerate(pieces):
            if not is_content:
                continue
            if k > 0 and not pieces[k - 1][0]:
                before = pieces[k - 1][1]
                kept = before.rstrip(" \t")
                pieces[k - 1][1], pieces[k][1] = kept, before[len(kept) :] + pieces[k][1]
            if k + 1 < len(pieces) and not pieces[k + 1][0]:
                after = pieces[k + 1][1]
                rest = after.lstrip("\r\n")
                pieces[k][1], pieces[k + 1][1] = (
                    pieces[k][1] + after[: len(after) - len(rest)],
                    rest,
                )
        segments = [
            plain_token_ids(self.tokenizer, text) if is_content else self._template_ids(text)
            for is_content, text in pieces
        ]
        last_seg = last_piece
        context = [k for k, (is_content, _) in enumerate(pieces) if is_content and k < last_seg]
        return GenPrompt(self._windows(segments, last_seg, context), role)

    def _windows(
        self, segments: list[list[int]], last_seg: int, context: Sequence[int] = ()
    ) -> tuple[tuple[int, ...], ...]:
        total = sum(len(s) for s in segments)
        budget = self.max_input_tokens - len(self.safety_prefix) - 1
        if total <= budget:
            return (tuple(i for s in segments for i in s),)
        content = segments[last_seg]
        room = budget - (total - len(content))
        if room < 2 * self.window_overlap and context:
            # the earlier turns are context: keep their most recent tokens (the checked message
            # gets at least half the budget) rather than refuse a check its prompt passed
            want = max(2 * self.window_overlap, min(len(content), budget // 2))
            excess = want - room
            segments = list(segments)
            for k in context:
                cut = min(excess, len(segments[k]))
                segments[k], excess = segments[k][cut:], excess - cut
            total = sum(len(s) for s in segments)
            room = budget - (total - len(content))
        if room < 2 * self.window_overlap:
            raise InvalidInputError(
                f"the conversation before the checked message takes {total - len(content)} tokens, "
                f"too many for this model's {self.max_input_tokens}-token input; check fewer turns"
            )
        stride = room - self.window_overlap
        out = []
        for start in range(0, len(content), stride):
            window = content[start : start + room]
            ids = [i for s in segments[:last_seg] for i in s] + window
            ids += [i for s in segments[last_seg + 1 :] for i in s]
            out.append(tuple(ids))
            if start + room >= len(content):
                break
        return tuple(out)
