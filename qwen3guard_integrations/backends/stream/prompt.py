"""Encoding a Stream session's conversation: the official rendering, minus the injection hole.

The Stream tokenizer's template is the plain Qwen3 template, whose output depends on the content
(reasoning in history is dropped, tool results are grouped): it must see the real messages, or
every later position shifts. `render_conversation` renders over the real content, as the
official pipeline does, and keeps special control tokens typed inside a message as plain text,
so a ``<|im_end|>`` in a message cannot close the user's turn early (the prompt verdict is read at
the last ``<|im_end|>``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...core.messages import Message
from ..render import render_conversation

__all__ = ["stream_prompt_ids"]


def stream_prompt_ids(tokenizer: Any, messages: Sequence[Message]) -> list[int]:
    """The prompt ids of ``messages`` for a Stream session (generation prompt, thinking off)."""
    rendered = render_conversation(
        tokenizer,
        [m.as_dict() for m in messages],
        add_generation_prompt=True,
        enable_thinking=False,
    )
    return list(rendered.ids)
