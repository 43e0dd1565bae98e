"""Guarded token generators for ``StreamingResponse.response_gen`` (sync and async).

With a `Qwen3StreamGuard`, every piece the LLM streams is fed to
a Stream session through a `HoldBack`:
only text the Stream head has moderated and settled is yielded, so the token that turns the
answer unsafe is never yielded, and the LLM's generator is closed at once.

Without one, the answer is buffered whole, checked with the Gen guard (response mode, with the
query as context), and released only when allowed: no unchecked text is ever yielded, but nothing
is yielded before the LLM has finished.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from ..core.errors import UnsafeContentError
from ..core.verdict import Verdict
from ..guards.gen import Qwen3Guard
from ..guards.holdback import HoldBack, Release
from ..guards.stream import Qwen3StreamGuard
from .events import Qwen3GuardVerdictEvent, Stage, aemit, emit

__all__ = ["OnUnsafe", "StreamGuardConfig", "aguard_token_gen", "guard_token_gen"]

#: What a blocked answer becomes: an `UnsafeContentError`, or the refusal text.
OnUnsafe = Literal["raise", "refuse"]


@dataclass
class StreamGuardConfig:
    """How one streamed answer is guarded.

    Attributes:
        query: the query text (the conversation's user turn).
        guard: the Gen guard (used when ``stream_guard`` is None).
        stream_guard: the Stream guard, or None to buffer and check with ``guard``.
        on_unsafe: ``"raise"`` (the generator raises `UnsafeContentError`) or
            ``"refuse"`` (the generator yields ``refusal`` and ends; nothing when it is empty).
        refusal: the text yielded after a block under ``"refuse"``.
        span_id: the LlamaIndex span the stream's events belong to (the query's span; the
            stream is read after it has closed). None: the span active when the event is sent.
        record: a dict updated in place: ``"response"`` (the verdict's ``to_dict()``; None while
            the Stream head finds nothing), ``"blocked"`` (``"stream"``/``"response"`` or None)
            and ``"complete"`` (True once the stream ended).
    """

    query: str
    guard: Qwen3Guard
    stream_guard: Qwen3StreamGuard | None
    on_unsafe: OnUnsafe = "raise"
    refusal: str = ""
    span_id: str | None = None
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def stage(self) -> Stage:
        """``"stream"`` with a Stream guard, else ``"response"``."""
        return "stream" if self.stream_guard is not None else "response"

    def event(self, verdict: Verdict, blocked: bool) -> Qwen3GuardVerdictEvent:
        """Record ``verdict`` and build its event."""
        self.record["response"] = verdict.to_dict()
        if blocked:
            self.record["blocked"] = self.stage
        action = self.on_unsafe if blocked else "allow"
        event = Qwen3GuardVerdictEvent(
            verdict=verdict, stage=self.stage, blocked=blocked, action=action
        )
        if self.span_id is not None:
            event.span_id = self.span_id
        return event

    def end(self, blocked_by: Verdict | None) -> Iterator[str]:
        """After the last release: raise, or yield the refusal, for a blocked answer."""
        self.record["complete"] = True
        if blocked_by is None:
            return
        if self.on_unsafe == "raise":
            raise UnsafeContentError(blocked_by)
        if self.refusal:
            yield self.refusal


def _close(gen: object) -> None:
    close: Callable[[], object] | None = getattr(gen, "close", None)
    if close is not None:
        close()


async def _aclose(gen: object) -> None:
    aclose: Callable[[], Any] | None = getattr(gen, "aclose", None)
    if aclose is not None:
        await aclose()


def guard_token_gen(gen: Iterator[str], cfg: StreamGuardConfig) -> Generator[str, None, None]:
    """Wrap a sync token generator; see the module docstring. Lazy: nothing runs until the
    first ``next``."""
    cfg.record.setdefault("response", None)
    cfg.record.setdefault("blocked", None)
    cfg.record["complete"] = False
    if cfg.stream_guard is None:
        yield from _buffered(gen, cfg)
        return
    blocked_by: Verdict | None = None
    with cfg.stream_guard.session(cfg.query) as session:
        hold = HoldBack(session)
        try:
            for piece in gen:
                rel = hold.push(piece)
                if rel.text:
                    yield rel.text
                if rel.blocked:
                    blocked_by = _blocked(rel)
                    break
            else:
                rel = hold.finish()
                if rel.text:
                    yield rel.text
                blocked_by = _blocked(rel) if rel.blocked else None
        finally:
            _close(gen)
        if hold.verdict is not None:
            emit(cfg.event(hold.verdict, blocked_by is not None))
    yield from cfg.end(blocked_by)


def _buffered(gen: Iterator[str], cfg: StreamGuardConfig) -> Iterator[str]:
    pieces = list(gen)
    text = "".join(pieces)
    blocked_by: Verdict | None = None
    if text.strip():
        verdict = cfg.guard.check_response(cfg.query, text)
        blocked = cfg.guard.blocks(verdict)
        emit(cfg.event(verdict, blocked))
        blocked_by = verdict if blocked else None
    if blocked_by is None:
        yield from pieces
    yield from cfg.end(blocked_by)


async def aguard_token_gen(
    gen: AsyncIterator[str], cfg: StreamGuardConfig
) -> AsyncGenerator[str, None]:
    """Async twin of `guard_token_gen`: model calls run in worker threads."""
    cfg.record.setdefault("response", None)
    cfg.record.setdefault("blocked", None)
    cfg.record["complete"] = False
    blocked_by: Verdict | None = None
    if cfg.stream_guard is None:
        pieces = [piece async for piece in gen]
        text = "".join(pieces)
        if text.strip():
            verdict = await cfg.guard.acheck_response(cfg.query, text)
            blocked = cfg.guard.blocks(verdict)
            await aemit(cfg.event(verdict, blocked))
            blocked_by = verdict if blocked else None
        if blocked_by is None:
            for piece in pieces:
                yield piece
    else:
        async with cfg.stream_guard.asession(cfg.query) as asession:
            hold = HoldBack(asession.session)
            try:
                async for piece in gen:
                    rel = await hold.apush(piece)
                    if rel.text:
                        yield rel.text
                    if rel.blocked:
                        blocked_by = _blocked(rel)
                        break
                else:
                    rel = await hold.afinish()
                    if rel.text:
                        yield rel.text
                    blocked_by = _blocked(rel) if rel.blocked else None
            finally:
                await _aclose(gen)
            if hold.verdict is not None:
                await aemit(cfg.event(hold.verdict, blocked_by is not None))
    for text in cfg.end(blocked_by):
        yield text


def _blocked(rel: Release) -> Verdict:
    """The verdict of a blocked release (always set when the policy blocks)."""
    assert rel.verdict is not None, "a blocked release carries its verdict"
    return rel.verdict
