"""Building the Gen model's input ids: the checkpoint's own chat template rendered the way the
official README calls it, untrusted control-token strings kept plain, and long inputs split into
overlapping windows instead of being truncated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ...core.errors import CheckpointError, ConfigurationError, InvalidInputError
from ...core.labels import Level, Role
from ...core.messages import Message, moderation_role
from ..render import RenderedPrompt, plain_token_ids, render_conversation

__all__ = ["GenPrompt", "GenPromptEncoder", "check_gen_config"]

#: How each level's answer starts after "Safety:" (the first sub-token decides the level).
LEVEL_WORDS: dict[Level, str] = {
    Level.SAFE: " Safe",
    Level.UNSAFE: " Unsafe",
    Level.CONTROVERSIAL: " Controversial",
}


def check_gen_config(config: Any, name: str) -> None:
    """Raise `CheckpointError` unless ``config`` is a causal-LM (Gen) checkpoint's.

    A Qwen3Guard-Stream checkpoint (``Qwen3ForGuardModel``, classification heads) would load as a
    language model with a random head and answer garbage; say so at load time instead.
    """
    archs = [str(a) for a in (getattr(config, "architectures", None) or [])]
    stream = any("Guard" in a for a in archs) or getattr(config, "guard_inner_size", None)
    if stream:
        raise CheckpointError(
            f"{name} is a Qwen3Guard-Stream checkpoint ({', '.join(archs) or 'guard heads'}), not "
            "a Gen one: load it with Qwen3StreamGuard.from_pretrained, or pass a Qwen3Guard-Gen "
            "checkpoint here",
            path=name,
        )
    if archs and not any(a.endswith("ForCausalLM") for a in archs):
        raise CheckpointError(
            f"{name} is not a Qwen3Guard-Gen checkpoint: its architectures are {archs}, a Gen "
            "checkpoint is a causal language model (Qwen3ForCausalLM)",
            path=name,
        )


@dataclass(frozen=True)
class GenPrompt:
    """One conversation, encoded: one id list per window (usually one) and the mode."""

    windows: tuple[tuple[int, ...], ...]
    role: Role


class GenPromptEncoder:
    """Encodes conversations for a Gen checkpoint's tokenizer.

    The conversation is rendered as the official README does
    (``apply_chat_template(messages, tokenize=False)``, which for Qwen3Guard-Gen already ends with
    the assistant header); only a template that leaves the header to ``add_generation_prompt`` is
    rendered with it, so no template gets two. Tokenization is `render_conversation`'s: special
    control tokens typed in a message (``<|im_end|>``) stay plain text, everything else (``<think>``
    included) is tokenized as the official pipeline does.
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
        self._needs_flag: bool | None = None  # whether the template wants add_generation_prompt
        self.max_input_tokens = max_input_tokens
        self.window_overlap = window_overlap
        self.safety_prefix: tuple[int, ...] = tuple(self._template_ids("Safety:"))
        first = {lv: plain_token_ids(tokenizer, w)[0] for lv, w in LEVEL_WORDS.items()}
        if len(set(first.values())) != 3:
            raise InvalidInputError("the three safety levels do not start with distinct tokens")
        self.level_first_token: dict[Level, int] = first

    def _template_ids(self, text: str) -> list[int]:
        # fixed strings (the answer prefix, control tokens) are asked for often: tokenize once
        ids = self._template_cache.get(text)
        if ids is None:
            ids = tuple(int(i) for i in self.tokenizer(text, add_special_tokens=False)["input_ids"])
            if len(self._template_cache) < 4096:
                self._template_cache[text] = ids
        return list(ids)

    def render(self, messages: Sequence[Message]) -> RenderedPrompt:
        """The conversation rendered and tokenized, ending with the assistant header."""
        dicts = [m.as_dict() for m in messages]
        if self._needs_flag is not True:
            out = render_conversation(self.tokenizer, dicts)
            if self._opens_answer(out.ids):
                self._needs_flag = False
                return out
        out = render_conversation(self.tokenizer, dicts, add_generation_prompt=True)
        if not self._opens_answer(out.ids):
            raise InvalidInputError(
                "the chat template does not open the assistant's answer, with or without "
                "add_generation_prompt: is this a Qwen3Guard-Gen checkpoint?"
            )
        self._needs_flag = True
        return out

    def _opens_answer(self, ids: Sequence[int]) -> bool:
        """Whether ``ids`` end inside an assistant turn that the model is to write (read from the
        control tokens, which only the template can contribute)."""
        starts = self._template_ids("<|im_start|>")
        ends = self._template_ids("<|im_end|>")
        if len(starts) != 1 or len(ends) != 1:
            return False
        at = max((k for k, t in enumerate(ids) if t == starts[0]), default=-1)
        header = self._template_ids("assistant")
        tail = list(ids[at + 1 :])
        return at >= 0 and tail[: len(header)] == header and ends[0] not in tail

    def encode(self, messages: Sequence[Message]) -> GenPrompt:
        """Encode a checked conversation; the mode follows its last message."""
        role = moderation_role(messages)
        rendered = self.render(messages)
        ids = list(rendered.ids)
        last = rendered.last_content
        if last is None:  # the template rewrites content: the checked message has no id range
            budget = self.max_input_tokens - len(self.safety_prefix) - 1
            if len(ids) > budget:
                raise InvalidInputError(
                    f"the conversation takes {len(ids)} tokens, more than this model's "
                    f"{self.max_input_tokens}-token input, and the chat template does not show "
                    "the checked message verbatim, so it cannot be split into windows"
                )
            return GenPrompt((tuple(ids),), role)
        # template text and message contents as segments, as the windows cut them
        spans = sorted((span, k) for k, span in enumerate(rendered.contents) if span is not None)
        segments: list[list[int]] = []
        context: list[int] = []
        last_seg = 0
        pos = 0
        for (lo, hi), k in spans:
            segments.append(ids[pos:lo])
            if k == len(messages) - 1:
                last_seg = len(segments)
            else:
                context.append(len(segments))
            segments.append(ids[lo:hi])
            pos = hi
        segments.append(ids[pos:])
        context = [k for k in context if k < last_seg]
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
