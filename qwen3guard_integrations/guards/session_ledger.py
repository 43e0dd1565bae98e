"""The per-token bookkeeping of one moderated response, written once for every session path.

A `ResponseLedger` knows which response ids were received, which of them were moderated, the
debounced decision and the verdict of the most severe trip. It makes no model call: a session
asks it to `ResponseLedger.plan` a run of ids (which are fed to the model, which count), makes
the one model call itself (sync, awaited on the engine, or not at all for a peek's replayed
prefix), and hands the head rows back to `ResponseLedger.apply`, which decides and returns the
`StreamUpdate`. `StreamSession.feed`, `StreamSession.afeed` and `StreamSession.peek` differ
only in that call.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any

from ..backends.stream.runtime import HeadRows, TokenResult
from ..core.errors import InvalidInputError
from ..core.labels import Level, Role
from ..core.policy import Policy
from ..core.stream_rule import Debouncer, PolicyRun, ThinkFilter, ThinkMode
from ..core.verdict import Verdict

__all__ = ["BACKEND_NAME", "Record", "ResponseLedger", "StepPlan", "StreamUpdate", "think_filter"]

BACKEND_NAME = "transformers-stream"

#: Per response id of a run: whether it was fed to the model, and its result when it counted
#: (what a later peek replays instead of running the ids again).
Record = list[tuple[bool, TokenResult | None]]


@dataclass(frozen=True)
class StreamUpdate:
    """What one `StreamSession.feed` found.

    Attributes:
        tokens: the newly moderated response tokens (scaffolding and skipped think content are
            not moderated, so not listed).
        start_index: index of ``tokens[0]`` among all moderated response tokens.
        decision: the debounced decision so far (never decreases).
        verdict: the response verdict of the most severe trip so far, with ``token_index`` and
            ``text_until``; None while the decision is Safe.
        blocked: whether the session's policy blocks ``verdict``.
        tripped: True when this update made the decision more severe.
    """

    tokens: tuple[TokenResult, ...]
    start_index: int
    decision: Level
    verdict: Verdict | None
    blocked: bool
    tripped: bool

    @property
    def levels(self) -> tuple[Level, ...]:
        """The per-token levels of `tokens`."""
        return tuple(t.level for t in self.tokens)


@dataclass(frozen=True)
class StepPlan:
    """Which ids of a run go to the model (`ResponseLedger.plan`).

    Attributes:
        to_feed: the ids the model runs (scaffolding included, skipped think content not).
        count_pos: for each moderated id: its position in ``to_feed``.
        per_id: per id of the run: fed?, and its index in ``count_pos`` when it counts.
        start: the index of the run's first moderated token among all moderated tokens.
    """

    to_feed: list[int]
    count_pos: list[int]
    per_id: list[tuple[bool, int | None]]
    start: int


class ResponseLedger:
    """The decision state of one response (see the module docstring).

    Args:
        tokenizer: the Stream tokenizer (decodes the text up to a trip).
        policy: which decisions block.
        debounce: consecutive flagged tokens that trip the decision.
        think: ``"moderate"`` or ``"skip"`` think content.
        model_name: the model named in the verdicts.
    """

    def __init__(
        self,
        tokenizer: Any,
        policy: Policy,
        debounce: int,
        think: ThinkMode,
        model_name: str | None,
    ) -> None:
        self._tok = tokenizer
        self.policy = policy
        self.model_name = model_name
        self.debouncer = Debouncer(debounce)
        self.policy_run = PolicyRun(policy, debounce)  # every token put to the policy
        self.filter = think_filter(tokenizer, think)
        self.ids_seen: list[int] = []  # every response id received, fed or not
        self.counted_at: list[int] = []  # for each moderated token: its index in ids_seen
        self.verdict: Verdict | None = None
        self.last: TokenResult | None = None  # the last moderated token

    @property
    def blocked(self) -> bool:
        """Whether the policy blocks the response so far."""
        return self.verdict is not None and self.policy.blocks(self.verdict)

    @property
    def settled_ids(self) -> int:
        """How many leading response ids can no longer be part of a future trip."""
        j = len(self.counted_at) - self.debouncer.n
        return 0 if j < 0 else self.counted_at[j] + 1

    def fed_count(self, ids: list[int]) -> int:
        """How many of ``ids`` would be fed to the model (nothing is recorded)."""
        probe = copy.copy(self.filter)
        return sum(probe.plan(t).feed for t in ids)

    def update(
        self,
        tokens: tuple[TokenResult, ...] = (),
        *,
        start: int | None = None,
        tripped: bool = False,
    ) -> StreamUpdate:
        """The `StreamUpdate` for ``tokens`` with the decision as it stands."""
        return StreamUpdate(
            tokens=tokens,
            start_index=len(self.counted_at) if start is None else start,
            decision=self.debouncer.decision,
            verdict=self.verdict,
            blocked=self.blocked,
            tripped=tripped,
        )

    # -- plan, (the caller's model call), apply ---------------------------------------------------
    def plan(self, ids: list[int], *, context: int = 0, cached: int = 0) -> StepPlan:
        """Record ``ids`` as received and say which of them the model runs.

        ``context`` (0: no limit) is the model's context and ``cached`` the positions the
        response holds already: a run past the context is refused, with nothing recorded (its
        positions would mean nothing to the model).
        """
        # len(ids) bounds what is fed, so the exact count is only taken near the limit
        if context and cached + len(ids) > context and cached + self.fed_count(ids) > context:
            raise InvalidInputError(
                f"the response would take the session past this Stream model's "
                f"{context}-token context; it cannot be moderated further"
            )
        start = len(self.counted_at)
        to_feed: list[int] = []
        count_pos: list[int] = []
        per_id: list[tuple[bool, int | None]] = []
        for t in ids:
            plan = self.filter.plan(t)
            self.ids_seen.append(t)
            counted: int | None = None
            if plan.feed:
                to_feed.append(t)
                if plan.count:
                    counted = len(count_pos)
                    count_pos.append(len(to_feed) - 1)
                    self.counted_at.append(len(self.ids_seen) - 1)
            per_id.append((plan.feed, counted))
        return StepPlan(to_feed, count_pos, per_id, start)

    def apply(
        self, step: StepPlan, rows: HeadRows | None, record: Record | None = None
    ) -> StreamUpdate:
        """Decide on the response head's ``rows`` for ``step.to_feed`` (None when nothing was
        fed); ``record``, when given, gets each id's (fed?, result) for a later replay."""
        tokens: list[TokenResult] = []
        tripped = False
        if rows is not None:
            for k, p in enumerate(step.count_pos):
                tok = TokenResult(
                    token_id=step.to_feed[p],
                    level=rows.levels[p],
                    probability=rows.level_probs[p],
                    category=rows.categories[p],
                    category_probability=rows.category_probs[p],
                    scores=rows.scores[p],
                )
                tokens.append(tok)
                tripped = self._push(step.start + k, tok) or tripped
        if record is not None:
            record += [(fed, None if c is None else tokens[c]) for fed, c in step.per_id]
        return self.update(tuple(tokens), start=step.start, tripped=tripped)

    def replay(self, ids: list[int], rec: Record) -> tuple[list[TokenResult], bool]:
        """`plan` and `apply` for ids whose results are known (a peek's reused prefix)."""
        tokens: list[TokenResult] = []
        tripped = False
        start = len(self.counted_at)
        for t, (_, tok) in zip(ids, rec):
            plan = self.filter.plan(t)
            self.ids_seen.append(t)
            if plan.feed and plan.count and tok is not None:
                self.counted_at.append(len(self.ids_seen) - 1)
                tokens.append(tok)
                tripped = self._push(start + len(tokens) - 1, tok) or tripped
        return tokens, tripped

    def flushed(self, update: StreamUpdate) -> StreamUpdate:
        """``update`` after the end of the response decided a flagged run cut short."""
        flushed = self.debouncer.flush()
        if (flushed or self._retrip(self.policy_run.flush())) and self.last is not None:
            self.verdict = self._trip_verdict(len(self.counted_at) - 1, self.last)
            update = dataclasses.replace(
                update,
                decision=self.debouncer.decision,
                verdict=self.verdict,
                blocked=self.blocked,
                tripped=True,
            )
        return update

    # -- a peek's rollback -----------------------------------------------------------------------
    def snapshot(self) -> tuple[Any, ...]:
        """The state `restore` goes back to."""
        return (
            copy.copy(self.debouncer),
            copy.copy(self.policy_run),
            copy.copy(self.filter),
            len(self.ids_seen),
            len(self.counted_at),
            self.verdict,
            self.last,
        )

    def restore(self, saved: tuple[Any, ...]) -> None:
        """Go back to a `snapshot`."""
        self.debouncer, self.policy_run, self.filter, n_seen, n_counted, verdict, last = saved
        self.verdict, self.last = verdict, last
        del self.ids_seen[n_seen:]
        del self.counted_at[n_counted:]

    # -- deciding ----------------------------------------------------------------------------------
    def _push(self, index: int, tok: TokenResult) -> bool:
        """Put moderated token ``index`` to the rule and the policy; True when it tripped."""
        self.last = tok
        raised = self.debouncer.push(tok.level)
        if raised or self._retrip(self.policy_run.push(tok.level, tok.category)):
            self.verdict = self._trip_verdict(index, tok)
            return True
        return False

    def _retrip(self, policy_blocks: bool) -> bool:
        """A run the policy blocks replaces a trip the policy allowed (`PolicyRun`)."""
        return policy_blocks and not self.blocked

    def _trip_verdict(self, index: int, tok: TokenResult) -> Verdict:
        upto = self.counted_at[index] + 1
        text = self._tok.decode(self.ids_seen[:upto], skip_special_tokens=False)
        return Verdict(
            level=tok.level,
            categories=(tok.category,),
            role=Role.RESPONSE,
            scores=tok.scores,
            token_index=index,
            text_until=text,
            model=self.model_name,
            backend=BACKEND_NAME,
        )


def think_filter(tokenizer: Any, mode: ThinkMode) -> ThinkFilter:
    """The `ThinkFilter` for ``tokenizer``'s think markers and chat control tokens."""
    unk = getattr(tokenizer, "unk_token_id", None)

    def tid(token: str) -> int | None:
        got = tokenizer.convert_tokens_to_ids(token)
        return None if got is None or got == unk else int(got)

    control = [
        i
        for i in (tid(t) for t in ("<|im_start|>", "<|im_end|>", "<|endoftext|>"))
        if i is not None
    ]

    def is_blank(token_id: int) -> bool:
        return not tokenizer.decode([token_id]).strip()

    return ThinkFilter(tid("<think>"), tid("</think>"), control, is_blank, mode)
