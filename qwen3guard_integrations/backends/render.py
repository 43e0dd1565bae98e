"""Tokenizing untrusted text as plain text, never as control tokens.

A user who writes ``<|im_end|>`` or ``<think>`` must not be able to close the template early or
write the guard's answer for it. ``split_special_tokens=True`` is not enough: Qwen3's ``<think>``
and tool tags are *added* tokens that are not "special", and they would still be matched. So
untrusted text goes through the normalizer, pre-tokenizer and BPE model of the fast tokenizer
directly, which never match added tokens.
"""

from __future__ import annotations

from typing import Any

from ..core.errors import InvalidInputError

__all__ = ["plain_token_ids", "token_id"]


def plain_token_ids(tokenizer: Any, text: str) -> list[int]:
    """The ids of ``text`` tokenized as ordinary text (no added or special tokens matched)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:  # a slow tokenizer: the best it offers
        ids = tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        return [int(i) for i in ids]
    normalizer = backend.normalizer
    if normalizer is not None:
        text = normalizer.normalize_str(text)
    pieces = (
        backend.pre_tokenizer.pre_tokenize_str(text) if backend.pre_tokenizer else [(text, None)]
    )
    model = backend.model
    return [tok.id for piece, _ in pieces for tok in model.tokenize(piece)]


def token_id(tokenizer: Any, token: str) -> int:
    """The id of a single token named ``token`` (for example ``<|im_end|>``); error if absent."""
    tid = tokenizer.convert_tokens_to_ids(token)
    unk = getattr(tokenizer, "unk_token_id", None)
    if tid is None or (unk is not None and tid == unk and token != tokenizer.unk_token):
        raise InvalidInputError(f"the tokenizer has no token {token!r}")
    return int(tid)
