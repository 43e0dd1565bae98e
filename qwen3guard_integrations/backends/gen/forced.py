"""The rest of a Gen answer read from forced-prefix forwards instead of a decode loop.

Once fast mode knows the level, the answer greedy decoding would write is almost always fixed
text with one or two choices in it::

    Safety: Unsafe\\nCategories: Violent\\nRefusal: Yes

So `ForcedAnswers` feeds the text it expects in two batched forwards that continue the KV
cache (rows of different lengths right-padded, the padding masked out): first the rest of the
level word and ``\\nCategories:``, whose last position gives the category's first sub-token
(the category names and ``None`` start with distinct sub-tokens); then the rest of that name
(and, in response mode, ``\\nRefusal:``), whose last position gives the line end or the
refusal word. At every fed position the model's arg-max must be the next fed token: that is
exactly the check that greedy decoding would have written the same text. A row where it is
not (several categories, an unexpected word, an end token) is off-grammar: it gets the plain
decode loop, from the cache as it stood after the prefill.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any

from ...core.labels import Category, Level, Role
from ..loading import cache_keyword
from .prompt import LEVEL_WORDS

__all__ = ["ForcedAnswers", "ForcedResult", "continue_answers", "crop_cache", "shared_prefix"]

_SAFETY = "Safety:"


@dataclass
class ForcedResult:
    """Per row the answer text after ``Safety:``; None where the row is off-grammar."""

    tails: list[str | None]


class ForcedAnswers:
    """Expected answer pieces of one tokenizer (tokenized once) and the forced forwards."""

    def __init__(self, tokenizer: Any, safety_prefix: Sequence[int]) -> None:
        self.tok = tokenizer
        self.ok = True
        base = list(safety_prefix)

        def suffix(text: str, after: list[int]) -> list[int] | None:
            ids = [int(i) for i in tokenizer(text, add_special_tokens=False)["input_ids"]]
            return ids[len(after) :] if ids[: len(after)] == after else None

        self.level_seq: dict[Level, list[int]] = {}
        self.names: dict[Level, dict[int, tuple[list[int], list[int]]]] = {}
        for level, word in LEVEL_WORDS.items():
            head = f"{_SAFETY}{word}\nCategories:"
            a = suffix(head, base)
            if not a:
                self.ok = False
                return
            self.level_seq[level] = a
            full_a = base + a
            firsts: dict[int, tuple[list[int], list[int]]] = {}
            for name in [c.value for c in Category] + ["None"]:
                line = suffix(f"{head} {name}\n", full_a)
                resp = suffix(f"{head} {name}\nRefusal:", full_a)
                if not line or not resp or line[0] in firsts or line[:-1] != resp[: len(line) - 1]:
                    self.ok = False
                    return
                # prompt mode: the name's tokens; response mode: name, newline, "Refusal:"
                firsts[line[0]] = (line[:-1], resp)
            self.names[level] = firsts

    def run(
        self,
        forward: Callable[[list[list[int]]], list[list[int]]],
        levels: Sequence[Level],
        role: Role,
        first_tokens: Sequence[int],
        budget: int,
        eos_ids: Sequence[int] = (),
    ) -> ForcedResult:
        """The tails for rows of one role. ``forward(seqs)`` runs one right-padded forced
        forward continuing the cache and returns, per row, the arg-max at each fed position."""
        steps = self.plan(levels, role, first_tokens, budget, eos_ids)
        try:
            seqs = next(steps)
            while True:
                seqs = steps.send(forward(seqs))
        except StopIteration as done:
            result: ForcedResult = done.value
            return result

    def plan(
        self,
        levels: Sequence[Level],
        role: Role,
        first_tokens: Sequence[int],
        budget: int,
        eos_ids: Sequence[int] = (),
    ) -> Generator[list[list[int]], list[list[int]], ForcedResult]:
        """`run` without the I/O: yields the rows to feed (one list per row, continuing what
        was fed before), receives per row the arg-max at each fed position, and returns the
        tails. A row that is off-grammar already gets a one-token filler."""
        n = len(levels)
        tails: list[str | None] = [None] * n
        if not self.ok or n == 0:
            return ForcedResult(tails)
        seq_a = [self.level_seq[lv] for lv in levels]
        if any(s[0] != t for s, t in zip(seq_a, first_tokens)):
            return ForcedResult(tails)  # the level word tokenizes otherwise in context
        arg_a = yield seq_a
        seq_b: list[list[int]] = []
        live: list[int] = []
        for i in range(n):
            if not _follows(seq_a[i], arg_a[i]):
                continue
            pick = self.names[levels[i]].get(arg_a[i][-1])
            if pick is None:
                continue
            seq_b.append(pick[1] if role is Role.RESPONSE else pick[0])
            live.append(i)
        if not live:
            return ForcedResult(tails)
        full: list[list[int]] = [[0] for _ in range(n)]
        for k, i in enumerate(live):
            full[i] = seq_b[k]
        got_all = yield full
        arg_b = [got_all[i] for i in live]
        for k, i in enumerate(live):
            seq, got = seq_b[k], arg_b[k]
            if not _follows(seq, got) or len(seq_a[i]) + len(seq) + 1 > budget:
                continue
            end = got[-1]
            ids = seq_a[i] + seq
            if role is Role.RESPONSE:  # the refusal word ends the answer
                ok = self.tok.decode([end]).strip().lower() in ("yes", "no")
                ids.append(end)
            elif end in eos_ids:  # the answer ends with the categories line
                ok = True
            else:  # or the line ends and decoding would stop there
                ok = "\n" in self.tok.decode([end])
                ids.append(end)
            if ok:
                tails[i] = self.tok.decode(ids, skip_special_tokens=True)
        return ForcedResult(tails)


def continue_answers(
    backend: Any, cache: Any, first: list[int], mask: Any, last_pos: Any, role: Role
) -> list[str]:
    """The answers of ``backend``'s (a `TransformersGenBackend`) rows whose level token is
    ``first``: read from forced-prefix forwards (`ForcedAnswers`) continuing ``cache``, decoded
    only for the rows that leave the grammar, from the cache as the prefill left it."""
    torch = backend.torch
    plen = int(cache.get_seq_length())
    state = {"mask": mask, "pos": last_pos, "ran": False}

    def forward(seqs: list[list[int]]) -> list[list[int]]:
        n, width = len(seqs), max(len(q) for q in seqs)
        ids = torch.full((n, width), backend.pad_id, dtype=torch.long)
        fed = torch.zeros((n, width), dtype=state["mask"].dtype)
        for r, q in enumerate(seqs):
            ids[r, : len(q)] = torch.tensor(q, dtype=torch.long)
            fed[r, : len(q)] = 1
        dev = state["mask"].device
        state["mask"] = torch.cat([state["mask"], fed.to(dev)], 1)
        at = state["pos"][:, None] + 1 + torch.arange(width, device=dev)[None]
        state["pos"] = state["pos"] + fed.sum(1).to(dev)
        state["ran"] = True
        arg = backend.model(
            input_ids=ids.to(dev),
            attention_mask=state["mask"],
            position_ids=at,
            use_cache=True,
            **{cache_keyword(): cache},
        ).logits.argmax(-1)
        return [row[: len(q)] for row, q in zip(arg.tolist(), seqs)]

    levels = [
        next(lv for lv, t in backend.encoder.level_first_token.items() if t == f) for f in first
    ]
    tails = backend._forced.run(
        forward, levels, role, first, backend.max_new_tokens, backend.eos_ids
    ).tails
    texts = ["" if t is None else "Safety:" + t for t in tails]
    off = [k for k, t in enumerate(tails) if t is None]
    if off:  # off-grammar rows: the plain decode loop from the prefill's cache
        if state["ran"]:
            crop_cache(cache, plen)
        if len(off) < len(first):
            cache.batch_select_indices(torch.tensor(off, device=mask.device))
        heads = ["Safety:" + backend.tokenizer.decode([first[k]]) for k in off]
        sel = torch.tensor(off, device=mask.device)
        decoded = backend._decode_loop(
            cache, [first[k] for k in off], mask[sel], last_pos[sel], [role] * len(off), heads
        )
        for k, head, tail in zip(off, heads, decoded):
            texts[k] = head + tail
    return texts


def crop_cache(cache: Any, keep: int) -> None:
    """Cut a ``DynamicCache`` back to ``keep`` positions (``crop`` takes the number of tokens
    to remove, negative, in transformers 5; the length to keep before)."""
    import inspect

    if "tokens_to_remove" in inspect.signature(cache.crop).parameters:
        cache.crop(-(int(cache.get_seq_length()) - keep))
    else:
        cache.crop(keep)


def shared_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading ids ``a`` and ``b`` have in common (where a KV cache can be reused)."""
    return next((k for k, (i, j) in enumerate(zip(a, b)) if i != j), min(len(a), len(b)))


def _follows(seq: list[int], argmax: list[int]) -> bool:
    """Whether greedy decoding, fed ``seq[0]``, would have written the rest of ``seq``."""
    return all(argmax[j] == seq[j + 1] for j in range(len(seq) - 1))
