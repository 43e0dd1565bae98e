"""One guarded answer: what it answers, the guards, what a block ends in, and its record (pure).

`GuardedAnswer` is shared by `GuardedQueryEngine` (one per query) and
`GuardedChatEngine` (one per turn). It holds no I/O: the engines run the checks and send the
events it builds.

The ending of a blocked stream is the same everywhere in this subpackage: the cleared text
already released stays released; then either `UnsafeContentError` is raised
(``on_unsafe="raise"``) or the refusal comes as one last piece of its own (``"refuse"``),
starting with a blank line when text was released before it, so that the joined text never
reads ``"build theSorry, ..."``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from llama_index.core.instrumentation.span import active_span_id

from ..core.actions import (
    DEFAULT_REFUSAL,
    BlockAction,
    check_action,
    check_refusal,
    render_refusal,
)
from ..core.errors import ConfigurationError, UnsafeContentError
from ..core.verdict import Verdict
from ..guards.gen import Qwen3Guard
from ..guards.stream import Qwen3StreamGuard
from .events import Qwen3GuardVerdictEvent, Stage

__all__ = [
    "ENGINE_ACTIONS",
    "AnswerOptions",
    "GuardedAnswer",
    "check_guards",
    "record_of",
    "refusal_piece",
]

#: The block actions the query and chat engines accept.
ENGINE_ACTIONS = (BlockAction.RAISE, BlockAction.REFUSE)

#: What separates a refusal from text released before it.
SEPARATOR = "\n\n"


def check_guards(owner: str, guard: object, stream_guard: object = None) -> None:
    """A `ConfigurationError` unless ``guard`` is a `Qwen3Guard` and ``stream_guard`` a
    `Qwen3StreamGuard` (or None)."""
    if not isinstance(guard, Qwen3Guard):
        hint = " (pass a Qwen3StreamGuard as stream_guard=)" if _is_stream(guard) else ""
        raise ConfigurationError(
            f"{owner} needs a Qwen3Guard (the Gen guard) as guard, got {type(guard).__name__}{hint}"
        )
    if stream_guard is not None and not _is_stream(stream_guard):
        raise ConfigurationError(
            f"{owner} needs a Qwen3StreamGuard (or None) as stream_guard, got "
            f"{type(stream_guard).__name__}"
        )


def _is_stream(obj: object) -> bool:
    return isinstance(obj, Qwen3StreamGuard)


def record_of(verdict: Verdict, *, include_text: bool = False) -> dict[str, Any]:
    """``verdict.to_dict()`` for a response's metadata: without ``text_until`` (the flagged
    text itself) unless ``include_text``. The verdict events keep it, for audit."""
    data = verdict.to_dict()
    if not include_text:
        data["text_until"] = None
    return data


def refusal_piece(refusal: str, released: str) -> str:
    """The last piece of a refused stream: the refusal, after a blank line when text was
    released before it; empty when ``refusal`` is."""
    if not refusal:
        return ""
    return SEPARATOR + refusal if released.strip() else refusal


@dataclass
class GuardedAnswer:
    """The state of one guarded answer (see the module docstring).

    Attributes:
        query: the user's text the answer is checked against (the query, or the chat message).
        guard: the Gen guard (the query, whole answers, streams without ``stream_guard``).
        stream_guard: the Stream guard for streamed answers, or None to buffer and check them.
        on_unsafe: `BlockAction` ``"raise"`` or ``"refuse"`` (validated here).
        refusal: the refusal template (`render_refusal`); ``""`` ends a stream with nothing.
        span_id: the LlamaIndex span the answer's events belong to (a stream is read after the
            call that made it has returned). None: the span active when an event is sent.
        record: the metadata dict updated in place: ``"query"``, ``"response"`` (verdict dicts or
            None), ``"blocked"`` (None, ``"query"``, ``"response"`` or ``"stream"``) and, for
            streams, ``"complete"``.
        include_text: keep ``text_until`` in ``record`` (default: dropped).
        blocked_by: the verdict that blocked the answer, once one did.
        released: every piece of cleared text released so far, joined.
    """

    query: str
    guard: Qwen3Guard
    stream_guard: Qwen3StreamGuard | None
    on_unsafe: BlockAction | str = BlockAction.RAISE
    refusal: str = ""
    span_id: str | None = None
    record: dict[str, Any] = field(default_factory=dict)
    include_text: bool = False
    blocked_by: Verdict | None = field(default=None, init=False)
    released: str = field(default="", init=False)

    def __post_init__(self) -> None:
        self.on_unsafe = check_action(self.on_unsafe, allowed=ENGINE_ACTIONS, option="on_unsafe")
        self.refusal = check_refusal(self.refusal)
        for key in ("query", "response", "blocked"):
            self.record.setdefault(key, None)

    @property
    def stage(self) -> Stage:
        """``"stream"`` with a Stream guard, else ``"response"``."""
        return "stream" if self.stream_guard is not None else "response"

    @property
    def action(self) -> BlockAction:
        """`on_unsafe` as a `BlockAction`."""
        return BlockAction(self.on_unsafe)

    def event(
        self, verdict: Verdict, blocked: bool, stage: Stage | None = None
    ) -> Qwen3GuardVerdictEvent:
        """Record ``verdict`` under ``stage`` (default `stage`) and build its event; a blocking
        verdict becomes `blocked_by` (a blocked query's too)."""
        stage = stage or self.stage
        self.record["query" if stage == "query" else "response"] = record_of(
            verdict, include_text=self.include_text
        )
        if blocked:
            self.record["blocked"] = stage
            self.blocked_by = verdict
        action = self.action.value if blocked else "allow"
        event = Qwen3GuardVerdictEvent(verdict=verdict, stage=stage, blocked=blocked, action=action)
        if self.span_id is not None:
            event.span_id = self.span_id
        return event

    def release(self, text: str) -> str:
        """Note ``text`` as released (cleared) and return it."""
        self.released += text
        return text

    def refusal_text(self) -> str:
        """The rendered refusal for `blocked_by`."""
        return render_refusal(self.refusal, self.blocked_by, stage=self.record["blocked"] or "")

    def refusal_piece(self) -> str:
        """The refusal as the last piece of the stream (see `refusal_piece`)."""
        return refusal_piece(self.refusal_text(), self.released)

    def error(self) -> UnsafeContentError:
        """The error a blocked answer raises."""
        assert self.blocked_by is not None, "only a blocked answer has an error"
        return UnsafeContentError(self.blocked_by)

    def end(self) -> Iterator[str]:
        """After the last release: nothing, the error, or the refusal piece."""
        self.record["complete"] = True
        if self.blocked_by is None:
            return
        if self.action is BlockAction.RAISE:
            raise self.error()
        piece = self.refusal_piece()
        if piece:
            yield piece


@dataclass(frozen=True)
class AnswerOptions:
    """What every answer of one guarded engine shares, validated once at construction.

    Raises:
        ConfigurationError: naming ``owner``, for a wrong guard or option.
    """

    owner: str
    guard: Qwen3Guard
    stream_guard: Qwen3StreamGuard | None = None
    on_unsafe: BlockAction | str = BlockAction.RAISE
    refusal: str = DEFAULT_REFUSAL
    include_text: bool = False

    def __post_init__(self) -> None:
        check_guards(self.owner, self.guard, self.stream_guard)
        action = check_action(self.on_unsafe, allowed=ENGINE_ACTIONS, option="on_unsafe")
        object.__setattr__(self, "on_unsafe", action)
        object.__setattr__(self, "refusal", check_refusal(self.refusal))

    def answer(self, query: str) -> GuardedAnswer:
        """A new `GuardedAnswer` for ``query``; its events belong to the span active now."""
        return GuardedAnswer(
            query=query,
            guard=self.guard,
            stream_guard=self.stream_guard,
            on_unsafe=self.on_unsafe,
            refusal=self.refusal,
            span_id=active_span_id.get(),
            include_text=self.include_text,
        )
