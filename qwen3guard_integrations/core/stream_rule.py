"""Pure pieces of a Stream session: the debounced decision rule and the think-block filter.

`Debouncer` is the official "consecutive" rule (SPEC section 3): the response becomes Unsafe
at token ``i`` when the last ``n`` tokens up to ``i`` are all Unsafe; else Controversial when they
are all Controversial (``n = 2`` officially). The decision only ever gets more severe. When
the stream ends inside a flagged run shorter than ``n``, `Debouncer.flush` lets that run
decide: nothing can confirm or clear it any more, and a guard fails closed.

`PolicyRun` puts every token to the policy, not only the trips: a decision that froze on an
allowed trip ("hotwire" under ``allow_categories=["Non-violent Illegal Acts"]``) must still block
when a later run of tokens names a category the policy blocks ("bomb", Violent). It counts
consecutive tokens whose own level and category the policy blocks; ``n`` of them in a row make
the session's verdict the blocking one (the same debounce as the level rule).

`ThinkFilter` decides, per response token id, whether it is fed to the model and whether it
counts in the decision: template scaffolding (the ``<think>`` / ``</think>`` markers, the
whitespace right after them, chat control tokens) is never counted; the content of a think block
is moderated (``think="moderate"``) or dropped (``think="skip"``). Only a reasoning block the
model opens at the very start of its answer is skipped: a ``<think>`` written later in the
visible answer (an attacker's literal, or one split across chunks as ``"<thi" + "nk>"``) opens
nothing that escapes moderation.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Literal

from .errors import ConfigurationError
from .labels import Category, Level
from .policy import Policy
from .verdict import Verdict

__all__ = ["Debouncer", "PolicyRun", "ThinkFilter", "ThinkMode", "TokenPlan"]

ThinkMode = Literal["moderate", "skip"]


class Debouncer:
    """The consecutive-tokens decision rule with ``n`` consecutive tokens (``n >= 1``)."""

    def __init__(self, n: int = 2) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigurationError(f"debounce must be an int >= 1, got {n!r}")
        self.n = n
        self.decision = Level.SAFE
        self._run_level = Level.SAFE
        self._run_len = 0

    def push(self, level: Level) -> bool:
        """Add the next token's level; True when the decision just became more severe."""
        if level is self._run_level:
            self._run_len += 1
        else:
            self._run_level, self._run_len = level, 1
        if (
            level is not Level.SAFE
            and self._run_len >= self.n
            and level.severity > self.decision.severity
        ):
            self.decision = level
            return True
        return False

    def flush(self) -> bool:
        """End of the stream: a flagged run cut short by the end decides as if complete (no
        later token can confirm or clear it; fail closed). True when the decision just became
        more severe."""
        level = self._run_level
        if (
            level is not Level.SAFE
            and 0 < self._run_len < self.n
            and level.severity > self.decision.severity
        ):
            self.decision = level
            return True
        return False


class PolicyRun:
    """Consecutive tokens that ``policy`` blocks on their own (level and category); see the
    module docstring. Only policies with category lists need it: without them the level rule's
    trips already reach every blocking level."""

    def __init__(self, policy: Policy, n: int = 2) -> None:
        self.policy = policy
        self.n = n
        self.active = bool(policy.allow_categories or policy.deny_categories)
        self._run = 0

    def blocks(self, level: Level, category: Category | None) -> bool:
        """Whether the policy blocks one token labelled ``level`` / ``category``."""
        if level is Level.SAFE:
            return False
        cats = () if category is None else (category,)
        return self.policy.blocks(Verdict.model_construct(level=level, categories=cats))

    def push(self, level: Level, category: Category | None) -> bool:
        """Add the next token; True when ``n`` blocked tokens in a row are reached (the verdict
        must become this token's)."""
        if not self.active:
            return False
        self._run = self._run + 1 if self.blocks(level, category) else 0
        return self._run == self.n

    def flush(self) -> bool:
        """End of the stream: a blocked run cut short by the end decides (fail closed)."""
        return self.active and 0 < self._run < self.n


@dataclass(frozen=True)
class TokenPlan:
    """What to do with one response token id."""

    feed: bool
    count: bool


class ThinkFilter:
    """Per-token plan for response ids (see module docstring).

    Args:
        think_start, think_end: ids of ``<think>`` and ``</think>`` (None when the tokenizer has
            none).
        control_ids: chat control ids (``<|im_start|>``, ``<|im_end|>``, ...): fed, never counted.
        is_blank: tells whether a token id's text is whitespace only.
        mode: ``"moderate"`` or ``"skip"`` the content of think blocks.
    """

    def __init__(
        self,
        think_start: int | None,
        think_end: int | None,
        control_ids: Collection[int],
        is_blank: Callable[[int], bool],
        mode: ThinkMode = "moderate",
    ) -> None:
        if mode not in ("moderate", "skip"):
            raise ConfigurationError(f"think must be 'moderate' or 'skip', got {mode!r}")
        self.mode = mode
        self._start = think_start
        self._end = think_end
        self._control = frozenset(control_ids)
        self._is_blank = is_blank
        self.in_think = False
        self._after_marker = False
        self._at_start = True  # nothing but blanks and control tokens seen yet
        self._skipping = False  # inside the reasoning block opened at the start (skip mode)
        self._drop_blank = False  # the blank after a skipped block's marker goes with it

    def plan(self, token_id: int) -> TokenPlan:
        """The plan for the next response token."""
        if token_id == self._start and self._start is not None:
            # only a block the model opens at the very start of its answer may be skipped
            self._skipping = self.mode == "skip" and self._at_start
            self._at_start = False
            self.in_think, self._after_marker = True, True
            self._drop_blank = self._skipping
            return TokenPlan(feed=not self._skipping, count=False)
        if token_id == self._end and self._end is not None:
            was_skipping = self._skipping
            self.in_think, self._after_marker, self._skipping = False, True, False
            self._at_start, self._drop_blank = False, was_skipping
            return TokenPlan(feed=not was_skipping, count=False)
        if token_id in self._control:
            return TokenPlan(feed=True, count=False)
        if self._skipping:
            return TokenPlan(feed=False, count=False)
        if self._after_marker:
            if self._is_blank(token_id):
                # in skip mode the blank that closes a dropped block goes with it
                return TokenPlan(feed=not self._drop_blank, count=False)
            self._after_marker = False
        if self._at_start and not self._is_blank(token_id):
            self._at_start = False
        return TokenPlan(feed=True, count=True)
