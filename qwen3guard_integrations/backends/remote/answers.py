"""What a serving backend asks the server for one window, without the I/O (a plan).

`WindowPlan.steps` is a generator: it yields an `Ask` (the prompt ids, the answer text they
already hold, how many tokens to generate), receives the server's `GenAnswer`, and returns the
window's answer. `RemoteGenBackend` drives it twice, once with the sync request and once with the
async one, so the two paths cannot drift.

Fast mode reads the answer as the local backend does, from forced-prefix positions instead of a
decode loop on the server (`ForcedAnswers`):

1. the prompt plus ``Safety:``, one new token with its top log-probabilities: the level's
   distribution (a Safe prompt needs nothing more);
2. plus the level word and ``\\nCategories:``, one new token: the category's first sub-token
   (the names and ``None`` start with distinct sub-tokens);
3. plus the rest of that name (response mode: and ``\\nRefusal:``), one new token: the line end,
   or the refusal word.

Each step generates one token, so the server never runs a decode loop for an answer that keeps
to the grammar, and servers with prefix caching (vLLM, SGLang, TGI 3) prefill only the new
tokens. What a remote step can check is the token the server generates; the fixed words fed in
between are taken as written (the local path checks them too). An answer that leaves the
grammar, or a server that returns no log-probabilities, is decoded as before: the whole answer
after the level (or after ``Safety:``) in one request.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

from ...core.errors import VerdictParseError
from ...core.gen_answer import GenAnswer
from ...core.labels import Level, Role
from ...core.parsing import parse_gen_output
from ..gen.forced import ForcedAnswers
from ..gen.prompt import GenPromptEncoder
from .protocol import LabelTokens

__all__ = ["Ask", "WindowPlan"]


@dataclass(frozen=True)
class Ask:
    """One request: the prompt ids, the answer text they already hold, tokens to generate
    (None: the backend's ``max_new_tokens``)."""

    ids: list[int]
    head: str
    max_new_tokens: int | None = None


Steps = Generator[Ask, GenAnswer, GenAnswer]


class WindowPlan:
    """The requests of one window (see the module docstring)."""

    def __init__(
        self,
        encoder: GenPromptEncoder,
        labels: LabelTokens,
        *,
        max_new_tokens: int,
        forced: bool = True,
    ) -> None:
        self.encoder = encoder
        self.tokenizer: Any = encoder.tokenizer
        self.labels = labels
        self.max_new_tokens = max_new_tokens
        self.forced = ForcedAnswers(self.tokenizer, encoder.safety_prefix) if forced else None
        eos = self.tokenizer.eos_token_id
        if eos is None:
            eos = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        self._eos = int(eos) if isinstance(eos, int) else 0

    def steps(self, window: Sequence[int], role: Role, *, fast: bool) -> Steps:
        """Yield each `Ask`, receive its answer; return the window's answer."""
        if not fast:
            answer = yield Ask(list(window), "")
            return answer
        ids, head = list(window) + list(self.encoder.safety_prefix), "Safety:"
        if self.forced is not None and self.forced.ok:
            first = yield Ask(ids, head, 1)
            if first.scores is not None:
                level = _pick(first.scores)
                if role is Role.PROMPT and level is Level.SAFE:
                    return GenAnswer("Safety: Safe", first.scores)
                tail = yield from self._tail(ids, level, role)
                if tail is not None:
                    return GenAnswer("Safety:" + tail, first.scores)
                again = yield self._after_level(ids, head, level)
                return GenAnswer(again.text, first.scores)
        answer = yield Ask(ids, head)
        if answer.scores is None or _parses(answer.text):
            return answer
        # an answer that does not parse but came with level scores: asked again with the level
        # the scores pick written in, as the local fast path reads it
        again = yield self._after_level(ids, head, _pick(answer.scores))
        return GenAnswer(again.text, answer.scores)

    def _after_level(self, ids: list[int], head: str, level: Level) -> Ask:
        return Ask([*ids, self.encoder.level_first_token[level]], head + self.labels.texts[level])

    def _tail(self, ids: list[int], level: Level, role: Role) -> Generator[Ask, GenAnswer, Any]:
        """The answer after ``Safety:`` from one-token steps, or None (off-grammar)."""
        assert self.forced is not None
        first = self.encoder.level_first_token[level]
        plan = self.forced.plan([level], role, [first], self.max_new_tokens, (self._eos,))
        fed = list(ids)
        try:
            seqs = next(plan)
            while True:
                seq = seqs[0]
                fed += seq
                reply = yield Ask(list(fed), "", 1)
                # the fed ids are taken as written; the server vouches for the new one
                seqs = plan.send([[*seq[1:], self._token(reply.text)]])
        except StopIteration as done:
            return done.value.tails[0]

    def _token(self, text: str) -> int:
        """The id of the one token a server wrote as ``text`` (an end token writes nothing)."""
        if not text:
            return self._eos
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return int(ids[0]) if ids else self._eos


def _pick(scores: dict[Level, float]) -> Level:
    # a tie never resolves to the less severe level: severity breaks it
    return max(scores, key=lambda lv: (scores[lv], lv.severity))


def _parses(text: str) -> bool:
    try:
        parse_gen_output(text)
    except VerdictParseError:
        return False
    return True
