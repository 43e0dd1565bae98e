"""Hold-back release of a moderated stream: only text the Stream head has cleared gets out.

A `HoldBack` sits between an LLM's token stream and the consumer. Each piece is fed to a
`StreamSession`; text is released only once every token in it is
*settled*: moderated, with ``debounce - 1`` moderated tokens after it, so no later trip can
include it. A released text is therefore at most the debounce window (plus the re-tokenizer's
held-back tail) behind the model. Once the session's policy blocks, nothing more is released
and later pieces are not even fed. `HoldBack.finish` flushes the re-tokenizer and, if the
stream was never blocked, releases the rest.

The released pieces, joined, are always a prefix of the streamed text (the whole of it when
the stream ends unblocked), byte for byte as the LLM wrote it: text pieces are released from the
text itself, never from decoded ids (the tokenizer's NFC normaliser would compose ``e`` + U+0301
into ``é``). Text is cut only at character boundaries: a token that ends inside a multi-byte
character waits for the token that completes it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from ..core.errors import ConfigurationError
from ..core.messages import MessagesInput
from ..core.verdict import Verdict
from .session import AsyncStreamSession, StreamSession, StreamUpdate

if TYPE_CHECKING:
    from .gen import Qwen3Guard

__all__ = ["HoldBack", "Piece", "Release", "abuffer_and_check", "buffer_and_check"]

#: What a stream piece can be: text, one Qwen3 id, or several.
Piece = str | int | Sequence[int]
#: How an adapter reads the piece to moderate out of one of its stream items (None: no text).
TextOf = Callable[[Any], Piece | None]

_PARTIAL = "\ufffd"  # what a decoder yields for a character cut in half


@dataclass(frozen=True)
class Release:
    """What one `HoldBack.push` (or `HoldBack.finish`) lets out.

    Attributes:
        text: newly released, cleared text (may be empty).
        blocked: whether the session's policy blocks the response; once True it stays True.
        verdict: the response verdict of the most severe trip so far (None while Safe).
        update: the session's update for this piece (None when the piece was not fed because the
            stream was already blocked).
        done: True on the last release of `HoldBack.run` (a block, or the end of the stream).
        item: from `HoldBack.run`: the stream item this release answers (an item without text
            comes through with ``text=""`` so the adapter can pass it on).
    """

    text: str
    blocked: bool
    verdict: Verdict | None
    update: StreamUpdate | None
    done: bool = False
    item: Any = None


class HoldBack:
    """Release only cleared text from ``session``; see the module docstring.

    ``session`` is a started `StreamSession` or `AsyncStreamSession`; the async methods go
    through the async session's own calls when given one. Thread-safe.
    """

    def __init__(self, session: StreamSession | AsyncStreamSession) -> None:
        self._asession: AsyncStreamSession | None = None
        if isinstance(session, AsyncStreamSession):
            self._asession = session
            session = session.session
        if not isinstance(session, StreamSession):
            raise ConfigurationError(
                "HoldBack needs a StreamSession or AsyncStreamSession (from "
                f"Qwen3StreamGuard.session() / .asession()), got {type(session).__name__}"
            )
        self.session = session
        self._lock = threading.Lock()
        self._released: list[str] = []
        self._released_ids = 0  # response ids whose text has been released

    @property
    def released_text(self) -> str:
        """All text released so far."""
        return "".join(self._released)

    @property
    def blocked(self) -> bool:
        """Whether the session's policy blocks the response so far."""
        return self.session.blocked

    @property
    def verdict(self) -> Verdict | None:
        """The response verdict of the most severe trip so far (None while Safe)."""
        return self.session.verdict

    def push(self, piece: str | int | Sequence[int]) -> Release:
        """Feed the next piece (text or Qwen3 ids); return what is now cleared."""
        with self._lock:
            if self.session.blocked:
                return Release("", True, self.session.verdict, None)
            update = self.session.feed(piece)
            if update.blocked:
                return Release("", True, update.verdict, update)
            return Release(
                self._release_upto(self.session.settled_ids), False, update.verdict, update
            )

    def finish(self) -> Release:
        """End of stream: moderate the held-back tail; release everything if never blocked."""
        with self._lock:
            if self.session.blocked:
                return Release("", True, self.session.verdict, None)
            update = self.session.finish()
            if update.blocked:
                return Release("", True, update.verdict, update)
            total = len(self.session.response_ids)
            return Release(self._release_upto(total, final=True), False, update.verdict, update)

    async def apush(self, piece: str | int | Sequence[int]) -> Release:
        """Async twin of `push`."""
        if self._asession is None:
            return await asyncio.to_thread(self.push, piece)
        if self.session.blocked:
            return Release("", True, self.session.verdict, None)
        update = await self._asession.afeed(piece)
        return self._after(update, self.session.settled_ids)

    async def afinish(self) -> Release:
        """Async twin of `finish`."""
        if self._asession is None:
            return await asyncio.to_thread(self.finish)
        if self.session.blocked:
            return Release("", True, self.session.verdict, None)
        update = await self._asession.afinish()
        return self._after(update, len(self.session.response_ids), final=True)

    def _after(self, update: StreamUpdate, stop: int, *, final: bool = False) -> Release:
        if update.blocked:
            return Release("", True, update.verdict, update)
        with self._lock:
            return Release(self._release_upto(stop, final=final), False, update.verdict, update)

    # --- the loop every adapter runs -----------------------------------------------------------
    def run(self, items: Iterable[Any], *, text_of: TextOf | None = None) -> Iterator[Release]:
        """Moderate ``items`` (pieces, or stream items read with ``text_of``) and yield what is
        released, as described in the module docstring.

        Stops at the first block and closes ``items`` at once (its ``close()``), so an LLM's
        generator stops generating; at the end of an unblocked stream the held-back tail is
        moderated and released. The last release has ``done=True``.
        """
        read = text_of or _identity
        try:
            for item in items:
                piece = read(item)
                if piece is None or piece == "":
                    yield Release("", self.blocked, self.verdict, None, item=item)
                    continue
                rel = replace(self.push(piece), item=item)
                if rel.blocked:
                    yield replace(rel, done=True)
                    return
                yield rel
            yield replace(self.finish(), done=True)
        finally:
            _close(items)

    async def arun(
        self, items: AsyncIterable[Any], *, text_of: TextOf | None = None
    ) -> AsyncIterator[Release]:
        """Async twin of `run` (closes ``items`` with ``aclose()``)."""
        read = text_of or _identity
        try:
            async for item in items:
                piece = read(item)
                if piece is None or piece == "":
                    yield Release("", self.blocked, self.verdict, None, item=item)
                    continue
                rel = replace(await self.apush(piece), item=item)
                if rel.blocked:
                    yield replace(rel, done=True)
                    return
                yield rel
            yield replace(await self.afinish(), done=True)
        finally:
            await _aclose(items)

    def _release_upto(self, stop: int, *, final: bool = False) -> str:
        """Release the text of response ids up to ``stop`` (cut at a character boundary)."""
        start = self._released_ids
        source = self.session.response_source(start, stop) if stop > start else None
        if source is not None:  # text pieces: release them as written, byte for byte
            self._released.append(source)
            self._released_ids = stop
            return source
        while stop > start:
            text = self.session.decode_response(start, stop)
            if final or not text.endswith(_PARTIAL):
                self._released.append(text)
                self._released_ids = stop
                return text
            stop -= 1  # the last token ends inside a character: wait for the next one
        return ""


def _identity(item: Any) -> Any:
    return item


def _close(items: object) -> None:
    close: Callable[[], object] | None = getattr(items, "close", None)
    if callable(close):
        close()


async def _aclose(items: object) -> None:
    aclose: Callable[[], Any] | None = getattr(items, "aclose", None)
    if callable(aclose):
        await aclose()


# --- the same protocol for a plain Gen guard: buffer the answer, check it once ------------------
def buffer_and_check(
    guard: Qwen3Guard, prompt: MessagesInput, items: Iterable[Any], *, text_of: TextOf | None = None
) -> Iterator[Release]:
    """Buffer the whole answer, check it with ``guard`` (response mode, ``prompt`` as context)
    and release it only when allowed: one `Release` with ``done=True`` and all the text (empty
    when blocked). Items without text are passed on (``item``) before it, as `HoldBack.run`
    does. An empty answer is not checked."""
    read = text_of or _identity
    texts: list[str] = []
    for item in items:
        piece = read(item)
        if isinstance(piece, str) and piece:
            texts.append(piece)
        else:
            yield Release("", False, None, None, item=item)
    text = "".join(texts)
    yield _checked(guard, text, guard.check_response(prompt, text) if text.strip() else None)


async def abuffer_and_check(
    guard: Qwen3Guard,
    prompt: MessagesInput,
    items: AsyncIterable[Any],
    *,
    text_of: TextOf | None = None,
) -> AsyncIterator[Release]:
    """Async twin of `buffer_and_check`."""
    read = text_of or _identity
    texts: list[str] = []
    async for item in items:
        piece = read(item)
        if isinstance(piece, str) and piece:
            texts.append(piece)
        else:
            yield Release("", False, None, None, item=item)
    text = "".join(texts)
    verdict = await guard.acheck_response(prompt, text) if text.strip() else None
    yield _checked(guard, text, verdict)


def _checked(guard: Qwen3Guard, text: str, verdict: Verdict | None) -> Release:
    blocked = verdict is not None and guard.blocks(verdict)
    return Release("" if blocked else text, blocked, verdict, None, done=True)
