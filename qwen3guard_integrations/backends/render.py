"""The one control-token-safe renderer that the Gen and Stream prompt encoders share.

The official pipeline renders the chat template over the real messages and tokenizes the text
whole: `render_conversation` does the same, with one hole closed. A *special* control token
(``<|im_start|>``, ``<|im_end|>``, ``<|endoftext|>``, ...) typed inside a message would become a real
control token there: the user could close their own turn, open another one, or write the guard's
answer for it. So, here:

1. each special-token string inside message content is swapped for a random placeholder before
   rendering (the template still sees the real content, so content-dependent logic such as
   Qwen3's reasoning stripping runs exactly as it does officially);
2. the rendered text is split where added tokens match, as the fast tokenizer does; the pieces
   in between (placeholders restored to their original text) go through the tokenizer's
   normalizer, pre-tokenizer and BPE model, never the added-token matcher (`plain_token_ids`);
3. the control tokens of the result are checked against those of a rendering whose messages are
   opaque marks: every special token must come from the template, none from a message.

Non-special added tokens (Qwen3's ``<think>``, ``</think>``, tool tags) inside content are matched
as the official pipeline matches them: on reasoning responses the model reads the input it was
trained on. For text without special-token strings the ids equal the official ones exactly.
"""

from __future__ import annotations

import bisect
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..core.errors import InvalidInputError

__all__ = ["RenderedPrompt", "plain_token_ids", "render_conversation", "token_id"]

_MARK = re.compile("\ue000([0-9a-f]{12})(\\d+)\ue001")


def _pieces(tokenizer: Any, text: str) -> list[tuple[list[int], int, int]]:
    """(ids, start, end) per pre-token of ``text`` as ordinary text (no added tokens matched)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:  # a slow tokenizer: the best it offers, as one piece
        ids = tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        return [([int(i) for i in ids], 0, len(text))]
    normalizer = backend.normalizer
    if normalizer is not None:
        text = normalizer.normalize_str(text)
    pre = backend.pre_tokenizer
    parts = pre.pre_tokenize_str(text) if pre else [(text, (0, len(text)))]
    model = backend.model
    return [([t.id for t in model.tokenize(piece)], s, e) for piece, (s, e) in parts]


def plain_token_ids(tokenizer: Any, text: str) -> list[int]:
    """The ids of ``text`` tokenized as ordinary text (no added or special tokens matched)."""
    return [i for ids, _, _ in _pieces(tokenizer, text) for i in ids]


def token_id(tokenizer: Any, token: str) -> int:
    """The id of a single token named ``token`` (for example ``<|im_end|>``); error if absent."""
    tid = tokenizer.convert_tokens_to_ids(token)
    unk = getattr(tokenizer, "unk_token_id", None)
    if tid is None or (unk is not None and tid == unk and token != tokenizer.unk_token):
        raise InvalidInputError(f"the tokenizer has no token {token!r}")
    return int(tid)


@dataclass(frozen=True)
class RenderedPrompt:
    """A rendered conversation as ids.

    ``text`` is the rendering (message text as written); ``starts`` the character offset in
    ``text`` where each id's pre-token starts; ``contents`` per message the id range ``(lo, hi)``
    holding its content when the template wrote every shown message verbatim (the Gen template
    does; a range includes a pre-token that straddles the content's edge, such as `` How`` in
    ``USER: How``), None for a message the template does not show or when it rewrites content.
    """

    ids: tuple[int, ...]
    text: str
    starts: tuple[int, ...]
    contents: tuple[tuple[int, int] | None, ...]

    @property
    def last_content(self) -> tuple[int, int] | None:
        """The id range of the last message's content (see ``contents``)."""
        return self.contents[-1] if self.contents else None


class _Vocab:
    """A tokenizer's added tokens: a matcher for all of them and the set of special ones."""

    def __init__(self, tokenizer: Any) -> None:
        decoder = getattr(tokenizer, "added_tokens_decoder", None) or {}
        added = {str(t.content): int(i) for i, t in decoder.items()}
        if not added:
            added = {str(k): int(v) for k, v in tokenizer.get_added_vocab().items()}
        special = {str(t.content) for t in decoder.values() if getattr(t, "special", True)}
        self.added = added
        self.special = special
        self.special_ids = frozenset(added[s] for s in special if s in added)
        names = sorted(added, key=len, reverse=True)  # leftmost-longest, like the tokenizer
        self.added_re = re.compile("|".join(re.escape(n) for n in names)) if names else None
        snames = sorted(special, key=len, reverse=True)
        self.special_re = re.compile("|".join(re.escape(n) for n in snames)) if snames else None


def _vocab(tokenizer: Any) -> _Vocab:
    vocab = getattr(tokenizer, "_qwen3guard_vocab", None)
    if not isinstance(vocab, _Vocab):
        vocab = _Vocab(tokenizer)
        try:
            tokenizer._qwen3guard_vocab = vocab
        except AttributeError:  # pragma: no cover - a tokenizer that refuses attributes
            pass
    return vocab


def _render(tokenizer: Any, messages: list[dict[str, Any]], kwargs: dict[str, Any]) -> str:
    try:
        return str(tokenizer.apply_chat_template(messages, tokenize=False, **kwargs))
    except Exception as exc:  # a template error is the input's (or the checkpoint's) problem
        raise InvalidInputError(
            f"the chat template cannot render this conversation: {exc}"
        ) from exc


def render_conversation(
    tokenizer: Any, messages: Sequence[Mapping[str, Any]], **template_kwargs: Any
) -> RenderedPrompt:
    """Render ``messages`` with the tokenizer's chat template and tokenize it safely.

    ``template_kwargs`` go to ``apply_chat_template`` (for example ``add_generation_prompt``,
    ``enable_thinking``). Raises `InvalidInputError` when the template drops the last message or
    a message would contribute a special control token.
    """
    vocab = _vocab(tokenizer)
    tag = secrets.token_hex(6)
    originals: list[str] = []

    def hide(m: re.Match[str]) -> str:
        originals.append(m.group(0))
        return f"\ue000{tag}{len(originals) - 1}\ue001"

    real: list[dict[str, Any]] = []
    marked: list[dict[str, Any]] = []
    marks: list[str] = []
    for k, m in enumerate(messages):
        content = str(m["content"])
        if vocab.special_re is not None:
            content = vocab.special_re.sub(hide, content)
        real.append({**m, "content": content})
        marks.append(f"\ue002{tag}{k}\ue003")
        marked.append({**m, "content": marks[-1]})
    skeleton = _render(tokenizer, marked, template_kwargs)
    if marks and marks[-1] not in skeleton:
        raise InvalidInputError("the chat template dropped the message to be checked")
    rendered = _render(tokenizer, real, template_kwargs)

    def restore(text: str) -> str:
        def back(m: re.Match[str]) -> str:
            if m.group(1) != tag or int(m.group(2)) >= len(originals):
                return m.group(0)
            return originals[int(m.group(2))]

        return _MARK.sub(back, text) if originals else text

    ids: list[int] = []
    starts: list[int] = []
    ends: list[int] = []
    out: list[str] = []
    at = 0  # length of the restored text so far

    def plain(segment: str) -> None:
        nonlocal at
        text = restore(segment)
        for piece_ids, s, e in _pieces(tokenizer, text):
            ids.extend(piece_ids)
            starts.extend([at + s] * len(piece_ids))
            ends.extend([at + e] * len(piece_ids))
        out.append(text)
        at += len(text)

    pos = 0
    for hit in vocab.added_re.finditer(rendered) if vocab.added_re is not None else ():
        if hit.start() > pos:
            plain(rendered[pos : hit.start()])
        ids.append(vocab.added[hit.group(0)])
        starts.append(at)
        ends.append(at + len(hit.group(0)))
        out.append(hit.group(0))
        at += len(hit.group(0))
        pos = hit.end()
    if pos < len(rendered):
        plain(rendered[pos:])
    got = [i for i in ids if i in vocab.special_ids]
    want = []
    if vocab.special_re is not None:
        want = [vocab.added[s.group(0)] for s in vocab.special_re.finditer(skeleton)]
    if got != want:
        raise InvalidInputError(
            "a message would contribute a control token to the rendered conversation "
            "(a control-token string split across a message boundary?); refusing to check it"
        )
    text = "".join(out)
    spans = _content_spans(text, starts, ends, skeleton, marks, messages)
    return RenderedPrompt(tuple(ids), text, tuple(starts), spans)


def _content_spans(
    text: str,
    starts: list[int],
    ends: list[int],
    skeleton: str,
    marks: list[str],
    messages: Sequence[Mapping[str, Any]],
) -> tuple[tuple[int, int] | None, ...]:
    """Each message's content id range, when the template wrote the contents verbatim: the
    skeleton with each mark replaced by its message's content must be ``text`` exactly."""
    none: tuple[tuple[int, int] | None, ...] = (None,) * len(marks)
    found: list[tuple[int, int]] = []  # (char offset in the skeleton, message index)
    for k, mark in enumerate(marks):
        count = skeleton.count(mark)
        if count > 1:
            return none
        if count == 1:
            found.append((skeleton.index(mark), k))
    found.sort()
    expected: list[str] = []
    char_spans: dict[int, tuple[int, int]] = {}
    pos = at = 0
    for where, k in found:
        expected.append(skeleton[pos:where])
        at += where - pos
        content = str(messages[k]["content"])
        expected.append(content)
        char_spans[k] = (at, at + len(content))
        at += len(content)
        pos = where + len(marks[k])
    expected.append(skeleton[pos:])
    if "".join(expected) != text:
        return none
    out: list[tuple[int, int] | None] = list(none)
    prev_hi = 0
    for _, k in found:  # in text order; ranges never overlap
        lo_char, hi_char = char_spans[k]
        lo = bisect.bisect_right(ends, lo_char)  # the first id reaching into the content
        hi = bisect.bisect_left(starts, hi_char)  # the first id starting after it
        lo = max(lo, prev_hi)
        prev_hi = max(lo, hi)
        out[k] = (lo, prev_hi)
    return tuple(out)
