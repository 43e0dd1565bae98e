"""Incremental re-tokenization: text pieces from any LLM in, stable Qwen3 token ids out.

A Stream model needs Qwen3 ids, but an LLM with another tokenizer streams text whose last word
may still grow ("hot" -> "hotwire") and so re-tokenize differently. `Retokenizer` keeps
the unstable tail back and emits only ids that can no longer change:

* the last ``holdback`` pre-tokens ("words" of the tokenizer's pre-tokenizer) are held back,
  because the pre-tokenizer may merge them with text still to come;
* a tail that could still become an added token (``"</thi"`` -> ``"</think>"``) is held back,
  with the last pre-tokens before it (an added token ends a segment, which changes how the
  whitespace just before it is split);
* a cut is only taken when tokenizing both sides separately gives the same ids as tokenizing
  the whole pending text.

`Retokenizer.finish` flushes the rest. `Retokenizer.source_text` gives back the text of emitted
ids exactly as it was pushed (the tokenizer's NFC normaliser never touches it): each id owns the
characters from its start offset to the next id's, so a character split over several byte-level
ids belongs to the last of them. Invariant: the ids emitted, concatenated, equal
``tokenizer(full_text, add_special_tokens=False, split_special_tokens=True).input_ids``.
Control-token text such as ``"<|im_end|>"`` inside a piece is plain text (it is never turned
into a special token); non-special added tokens such as ``<think>`` stay single tokens, exactly
as the tokenizer itself treats them with ``split_special_tokens=True``.

Python strings hold whole code points, so no UTF-8 sequence can be cut inside a piece; a byte
sequence split across *tokens* (one emoji, several byte-level tokens) belongs to one pre-token
and is emitted whole.
"""

from __future__ import annotations

import bisect
from typing import Any

from ..core.deps import require
from ..core.errors import ConfigurationError, InvalidInputError
from ..core.messages import check_text

__all__ = ["Retokenizer", "backend_tokenizer"]


def backend_tokenizer(tokenizer: Any, *, split_special_tokens: bool = True) -> Any:
    """A ``tokenizers.Tokenizer`` for ``tokenizer`` with ``encode_special_tokens`` set once.

    A fast tokenizer's backend is copied (so that no shared tokenizer state is toggled per call,
    which would race between threads). A ``tokenizers.Tokenizer`` that already has the wanted
    setting is used as it is: build it once with this function and share it between
    re-tokenizers (copying costs about as much as loading the tokenizer).
    """
    tokenizers = require("tokenizers", "transformers")
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    if not isinstance(backend, tokenizers.Tokenizer):
        raise InvalidInputError(
            f"re-tokenization needs a fast (Rust-backed) tokenizer; got {type(tokenizer).__name__}"
        )
    if backend is tokenizer and backend.encode_special_tokens == split_special_tokens:
        return backend
    copy = tokenizers.Tokenizer.from_str(backend.to_str())
    copy.encode_special_tokens = split_special_tokens
    return copy


class Retokenizer:
    """Turns a stream of text pieces into Qwen3 ids, emitting only ids whose text is stable.

    Args:
        tokenizer: the Stream model's tokenizer (a ``transformers`` fast tokenizer or a
            ``tokenizers.Tokenizer``).
        holdback: how many trailing pre-tokens to keep back (2 covers Qwen3's pre-tokenizer:
            a trailing whitespace run or punctuation can join the next word).

    Not thread-safe by itself: a session serialises its calls.
    """

    def __init__(self, tokenizer: Any, *, holdback: int = 2) -> None:
        if holdback < 1:
            raise ConfigurationError("holdback must be at least 1")
        self._tok = backend_tokenizer(tokenizer)
        self._holdback = holdback
        added = self._tok.get_added_tokens_decoder().values()
        # with encode_special_tokens, special tokens are split into text; the others still match
        self._added = tuple(t.content for t in added if not t.special and t.content)
        self._added_max = max((len(a) for a in self._added), default=0)
        self._pending = ""
        self._emitted = 0
        self._chunks: list[str] = []  # the text consumed into ids, as pushed
        self._chunk_at: list[int] = []  # absolute start offset of each chunk
        self._consumed = 0  # characters consumed into ids
        self._starts: list[int] = []  # for each emitted id: where its characters start

    @property
    def pending_text(self) -> str:
        """Text received but not yet turned into ids."""
        return self._pending

    @property
    def emitted(self) -> int:
        """How many ids have been emitted so far."""
        return self._emitted

    def encode(self, text: str) -> list[int]:
        """The reference tokenization of ``text`` (what the emitted ids must add up to)."""
        return list(self._tok.encode(text, add_special_tokens=False).ids)

    def push(self, piece: str) -> list[int]:
        """Add a text piece; return the ids that became stable (possibly none)."""
        check_text(piece, what="a text piece", allow_empty=True)
        if not piece:
            return []
        self._pending += piece
        return self._take(self._cut())

    def finish(self) -> list[int]:
        """Flush: the ids of all text still held back."""
        return self._take(len(self._pending))

    def source_text(self, start: int, stop: int | None = None) -> str:
        """The pushed text of emitted ids ``start:stop``, character for character."""
        stop = self._emitted if stop is None else min(stop, self._emitted)
        if stop <= start:
            return ""
        a, b = self._boundary(start), self._boundary(stop)
        if b <= a:
            return ""
        k = bisect.bisect_right(self._chunk_at, a) - 1
        parts: list[str] = []
        while k < len(self._chunks) and self._chunk_at[k] < b:
            base, chunk = self._chunk_at[k], self._chunks[k]
            parts.append(chunk[max(0, a - base) : b - base])
            k += 1
        return "".join(parts)

    def _boundary(self, index: int) -> int:
        return self._starts[index] if index < self._emitted else self._consumed

    def _take(self, cut: int) -> list[int]:
        if cut <= 0:
            return []
        text = self._pending[:cut]
        enc = self._tok.encode(text, add_special_tokens=False)
        ids = list(enc.ids)
        # where each id's characters start; a suffix minimum keeps the starts non-decreasing
        # (the ids of one multi-byte character share its start; the first id owns none of it)
        starts = [int(o[0]) for o in enc.offsets]
        if starts:
            starts[0] = 0
        low = len(text)
        for k in range(len(starts) - 1, -1, -1):
            low = starts[k] = min(starts[k], low)
        self._starts.extend(self._consumed + o for o in starts)
        self._chunks.append(text)
        self._chunk_at.append(self._consumed)
        self._consumed += cut
        self._pending = self._pending[cut:]
        self._emitted += len(ids)
        return ids

    def _cut(self) -> int:
        """Where the stable prefix of the pending text ends (0: nothing is stable yet)."""
        text = self._pending
        # an added token still being completed ends a segment, which changes how the text just
        # before it pre-tokenizes: hold back the last words before its possible start too
        end = self._added_prefix_start(text)
        enc = self._tok.encode(text[:end], add_special_tokens=False)
        distinct = sorted({w for w in enc.word_ids if w is not None})
        if len(distinct) <= self._holdback:
            return 0
        first_kept = distinct[-self._holdback]
        i = next(k for k, w in enumerate(enc.word_ids) if w == first_kept)
        cut = int(enc.offsets[i][0])
        if cut <= 0:
            return 0
        # take the cut only where tokenizing the two sides apart changes nothing
        if self.encode(text[:cut]) + self.encode(text[cut:]) != self.encode(text):
            return 0
        return cut

    def _added_prefix_start(self, text: str) -> int:
        """Start of a tail of ``text`` that is a proper prefix of an added token, else len."""
        start = max(0, len(text) - self._added_max + 1)
        for k in range(start, len(text)):
            tail = text[k:]
            if any(a.startswith(tail) and len(a) > len(tail) for a in self._added):
                return k
        return len(text)
