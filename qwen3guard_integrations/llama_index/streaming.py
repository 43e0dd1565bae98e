"""Guarded token streams: only text a guard has cleared is released (sync and async).

With a `Qwen3StreamGuard`, every piece the LLM streams goes through `HoldBack.run`
(`HoldBack.arun` over an `AsyncStreamSession`): only text the Stream head has moderated and
settled is released, the token that turns the answer unsafe never is, and the LLM's generator
is closed at once.

Without one, the answer is buffered whole and checked with the Gen guard
(`buffer_and_check`, response mode, the query as context); its pieces are released, one by
one, only when it is allowed: nothing unchecked is ever released, but nothing is released before
the LLM has finished.

`release` / `arelease` yield the cleared text and leave the verdict in the
`GuardedAnswer`; `guard_token_gen` / `aguard_token_gen` add the ending (the error, or the
refusal as a piece of its own) for a ``StreamingResponse.response_gen``.
"""

from __future__ import annotations

import warnings
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Generator, Iterable
from typing import Any

from ..guards.holdback import HoldBack, Release, TextOf, abuffer_and_check, buffer_and_check
from .answer import GuardedAnswer
from .events import Qwen3GuardVerdictEvent, aemit, emit

__all__ = ["GuardedAnswer", "aguard_token_gen", "arelease", "guard_token_gen", "release"]

# the old names, kept for one minor release: getting one warns with its new name
DEPRECATED_NAMES = {"StreamGuardConfig": "GuardedAnswer", "OnUnsafe": "BlockAction"}


def old_name(name: str, *, stacklevel: int = 3) -> Any:
    """The object behind a deprecated name (`DEPRECATED_NAMES`), with a `DeprecationWarning`."""
    from ..core.actions import BlockAction

    new = DEPRECATED_NAMES[name]
    warnings.warn(f"{name} is deprecated; use {new}", DeprecationWarning, stacklevel=stacklevel)
    return GuardedAnswer if new == "GuardedAnswer" else BlockAction


def __getattr__(name: str) -> Any:
    if name in DEPRECATED_NAMES:
        return old_name(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def release(
    items: Iterable[Any], answer: GuardedAnswer, *, text_of: TextOf | None = None
) -> Generator[str, None, None]:
    """Yield the cleared text of ``items`` (pieces, or stream items read with ``text_of``);
    the verdict goes into ``answer`` and its event is sent. ``items`` is closed at a block."""
    if answer.stream_guard is None:
        pieces: list[str] = []
        recorded = _recorded(items, pieces, text_of)
        for rel in buffer_and_check(answer.guard, answer.query, recorded, text_of=text_of):
            texts, event = _settle(rel, answer, pieces)
            if event is not None:
                emit(event)
            yield from texts
        return
    with answer.stream_guard.session(answer.query) as session:
        releases = HoldBack(session).run(items, text_of=text_of)
        try:
            for rel in releases:
                texts, event = _settle(rel, answer, [rel.text])
                if event is not None:
                    emit(event)
                yield from texts
        finally:
            releases.close()  # type: ignore[attr-defined]


async def arelease(
    items: AsyncIterable[Any], answer: GuardedAnswer, *, text_of: TextOf | None = None
) -> AsyncGenerator[str, None]:
    """Async twin of `release` (over an `AsyncStreamSession`)."""
    if answer.stream_guard is None:
        pieces: list[str] = []
        recorded = _arecorded(items, pieces, text_of)
        async for rel in abuffer_and_check(answer.guard, answer.query, recorded, text_of=text_of):
            texts, event = _settle(rel, answer, pieces)
            if event is not None:
                await aemit(event)
            for text in texts:
                yield text
        return
    async with answer.stream_guard.asession(answer.query) as asession:
        releases = HoldBack(asession).arun(items, text_of=text_of)
        try:
            async for rel in releases:
                texts, event = _settle(rel, answer, [rel.text])
                if event is not None:
                    await aemit(event)
                for text in texts:
                    yield text
        finally:
            await releases.aclose()  # type: ignore[attr-defined]


def _settle(
    rel: Release, answer: GuardedAnswer, texts: list[str]
) -> tuple[list[str], Qwen3GuardVerdictEvent | None]:
    """What a release lets out (a buffered answer's pieces only once it is allowed) and, on
    the last release, the verdict's event (recorded in ``answer``)."""
    event = None
    if rel.done and rel.verdict is not None:
        event = answer.event(rel.verdict, rel.blocked)
    if rel.blocked or (answer.stream_guard is None and not rel.done):
        return [], event
    return [answer.release(t) for t in texts if t], event


def _recorded(
    items: Iterable[Any], pieces: list[str], text_of: TextOf | None
) -> Generator[Any, None, None]:
    for item in items:
        piece = text_of(item) if text_of is not None else item
        if isinstance(piece, str) and piece:
            pieces.append(piece)
        yield item


async def _arecorded(
    items: AsyncIterable[Any], pieces: list[str], text_of: TextOf | None
) -> AsyncIterator[Any]:
    async for item in items:
        piece = text_of(item) if text_of is not None else item
        if isinstance(piece, str) and piece:
            pieces.append(piece)
        yield item


def guard_token_gen(gen: Iterable[str], answer: GuardedAnswer) -> Generator[str, None, None]:
    """Wrap a sync token generator: cleared text, then the ending (`GuardedAnswer.end`).
    Lazy: nothing runs until the first ``next``."""
    answer.record["complete"] = False
    yield from release(gen, answer)
    yield from answer.end()


async def aguard_token_gen(
    gen: AsyncIterable[str], answer: GuardedAnswer
) -> AsyncGenerator[str, None]:
    """Async twin of `guard_token_gen`."""
    answer.record["complete"] = False
    async for text in arelease(gen, answer):
        yield text
    for text in answer.end():
        yield text
