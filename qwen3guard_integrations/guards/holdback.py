"""Hold-back release of a moderated stream: only text the Stream head has cleared gets out.

A `HoldBack` sits between an LLM's token stream and the consumer. Each piece is fed to a
`StreamSession`; text is released only once every token in it is
*settled*: moderated, with ``debounce - 1`` moderated tokens after it, so no later trip can
include it. A released text is therefore at most the debounce window (plus the re-tokenizer's
held-back tail) behind the model. Once the session's policy blocks, nothing more is released
and later pieces are not even fed. `HoldBack.finish` flushes the re-tokenizer and, if the
stream was never blocked, releases the rest.

The released pieces, joined, are always a prefix of the streamed text (the whole of it when
the stream ends unblocked). Text is cut only at character boundaries: a token that ends inside
a multi-byte character waits for the token that completes it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from ..core.verdict import Verdict
from .session import StreamSession, StreamUpdate

__all__ = ["HoldBack", "Release"]

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
    """

    text: str
    blocked: bool
    verdict: Verdict | None
    update: StreamUpdate | None


class HoldBack:
    """Release only cleared text from ``session``; see the module docstring.

    ``session`` is a started `StreamSession` (for an
    ``AsyncStreamSession`` pass its ``.session``). Thread-safe; the async methods run the model
    in a worker thread.
    """

    def __init__(self, session: StreamSession) -> None:
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
        """`push` with the model call in a worker thread."""
        return await asyncio.to_thread(self.push, piece)

    async def afinish(self) -> Release:
        """`finish` with the model call in a worker thread."""
        return await asyncio.to_thread(self.finish)

    def _release_upto(self, stop: int, *, final: bool = False) -> str:
        """Release the text of response ids up to ``stop`` (cut at a character boundary)."""
        start = self._released_ids
        while stop > start:
            text = self.session.decode_response(start, stop)
            if final or not text.endswith(_PARTIAL):
                self._released.append(text)
                self._released_ids = stop
                return text
            stop -= 1  # the last token ends inside a character: wait for the next one
        return ""
