"""The bytes of each token id, so clients decode response text without the tokenizer.

Qwen3 tokenizers are byte-level BPE: a token's string spells its bytes through the GPT-2
byte-to-character table (rebuilt here); added tokens (``<|im_end|>``, ``<think>``) are their
content. Joining the bytes of ids and decoding them as UTF-8 with replacement gives what
``tokenizer.decode(ids, skip_special_tokens=False)`` gives.
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["TokenBytes", "byte_level_decoder"]


def byte_level_decoder() -> dict[str, int]:
    """The character -> byte table of byte-level BPE vocabularies."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("\xa1"), ord("\xac") + 1),
        *range(ord("\xae"), ord("\xff") + 1),
    ]
    table = {chr(b): b for b in printable}
    shifted = 0
    for b in range(256):
        if b not in printable:
            table[chr(256 + shifted)] = b
            shifted += 1
    return table


class TokenBytes:
    """``bytes_of(id)`` for one tokenizer, cached per id (thread-safe)."""

    def __init__(self, tokenizer: Any) -> None:
        self._tok = tokenizer
        self._table = byte_level_decoder()
        added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
        self._cache: dict[int, bytes] = {
            int(i): str(getattr(t, "content", t)).encode("utf-8") for i, t in added.items()
        }
        self._lock = threading.Lock()

    def bytes_of(self, token_id: int) -> bytes:
        """The bytes token ``token_id`` stands for."""
        got = self._cache.get(token_id)
        if got is not None:
            return got
        piece = self._tok.convert_ids_to_tokens(token_id)
        try:
            got = bytes(self._table[c] for c in str(piece))
        except KeyError:  # not a byte-level token: its decoded text is the best there is
            got = str(self._tok.decode([token_id], skip_special_tokens=False)).encode("utf-8")
        with self._lock:
            self._cache[token_id] = got
        return got
