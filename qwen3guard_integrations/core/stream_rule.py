"""Pure pieces of a Stream session: the debounced decision rule and the think-block filter.

`Debouncer` is the official "consecutive" rule (SPEC section 3): the response becomes Unsafe
at token ``i`` when the last ``n`` tokens up to ``i`` are all Unsafe; else Controversial when they
are all Controversial (``n = 2`` officially). The decision only ever gets more severe. When
the stream ends inside a flagged run shorter than ``n``, `Debouncer.flush` lets that run
decide: nothing can confirm or clear it any more, and a guard fails closed.

`ThinkFilter` decides, per response token id, whether it is fed to the model and whether it
counts in the decision: template scaffolding (the ``<think>`` / ``</think>`` markers, the
whitespace right after them, chat control tokens) is never counted; the content of a think block
is moderated (``think="moderate"``) or dropped (``think="skip"``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Literal

from .errors import ConfigurationError
from .labels import Level

__all__ = ["Debouncer", "ThinkFilter", "ThinkMode", "TokenPlan"]

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

    def plan(self, token_id: int) -> TokenPlan:
        """The plan for the next response token."""
        skip = self.mode == "skip"
        if token_id == self._start and self._start is not None:
            self.in_think, self._after_marker = True, True
            return TokenPlan(feed=not skip, count=False)
        if token_id == self._end and self._end is not None:
            was_in = self.in_think
            self.in_think, self._after_marker = False, True
            return TokenPlan(feed=not (skip and was_in), count=False)
        if token_id in self._control:
            return TokenPlan(feed=True, count=False)
        if self.in_think and skip:
            return TokenPlan(feed=False, count=False)
        if self._after_marker:
            if self._is_blank(token_id):
                # in skip mode the blank that closes a dropped block goes with it
                return TokenPlan(feed=not skip, count=False)
            self._after_marker = False
        return TokenPlan(feed=True, count=True)
