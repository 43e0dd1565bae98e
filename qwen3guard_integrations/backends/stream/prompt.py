"""Encoding a Stream session's conversation: the chat template's control tokens real, message text
plain.

Rendering the template to text and tokenizing that text whole would turn a ``<|im_end|>`` or
``<|im_start|>`` typed inside a message into real control tokens: the user could close their own
turn and open another one, and the prompt verdict (read at the last ``<|im_end|>``) would judge
the text the attacker chose. So, as for Gen (`gen_prompt`), the template is rendered around
placeholder strings, its own text is tokenized normally and each message's content is tokenized
as plain text (`plain_token_ids`). For ordinary text the ids equal those of the
whole rendered text.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from typing import Any

from ...core.errors import InvalidInputError
from ...core.messages import Message
from ..render import plain_token_ids

__all__ = ["stream_prompt_ids"]


def stream_prompt_ids(tokenizer: Any, messages: Sequence[Message]) -> list[int]:
    """The prompt ids of ``messages`` for a Stream session (generation prompt, thinking off)."""
    tag = secrets.token_hex(6)
    marks = [f"\ue000{tag}{i}\ue001" for i in range(len(messages))]
    rendered = tokenizer.apply_chat_template(
        [{"role": m.role, "content": mark} for m, mark in zip(messages, marks)],
        tokenize=False,
        add_generation_prompt=True,
        enable_thinking=False,
    )
    index = {mark: i for i, mark in enumerate(marks)}
    # (is_content, text): message texts are plain; template text keeps its control tokens
    pieces: list[list[Any]] = []
    seen: set[int] = set()
    for part in re.split(f"(\ue000{tag}\\d+\ue001)", rendered):
        if part in index:
            seen.add(index[part])
            pieces.append([True, messages[index[part]].content])
        elif part:
            pieces.append([False, part])
    if len(messages) - 1 not in seen:
        raise InvalidInputError("the chat template dropped the message to be checked")
    # keep pre-token boundaries as in one joint tokenization: whitespace before a message and
    # newlines after it go with the message text ("?" + "\n" is one pre-token, "?\n")
    for k, (is_content, _) in enumerate(pieces):
        if not is_content:
            continue
        if k > 0 and not pieces[k - 1][0]:
            before = pieces[k - 1][1]
            kept = before.rstrip()
            pieces[k - 1][1], pieces[k][1] = kept, before[len(kept) :] + pieces[k][1]
        if k + 1 < len(pieces) and not pieces[k + 1][0]:
            after = pieces[k + 1][1]
            rest = after.lstrip("\r\n")
            pieces[k][1], pieces[k + 1][1] = pieces[k][1] + after[: len(after) - len(rest)], rest
    ids: list[int] = []
    for is_content, text in pieces:
        if is_content:
            ids += plain_token_ids(tokenizer, text)
        elif text:
            ids += [int(i) for i in tokenizer(text, add_special_tokens=False)["input_ids"]]
    return ids
