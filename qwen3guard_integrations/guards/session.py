"""A moderation session over one conversation: prompt verdict, then token-by-token response checks.

A `StreamSession` renders the conversation with the Stream tokenizer's chat template, runs it
once (the prompt verdict is the query head at the ``<|im_end|>`` closing the last user turn) and
keeps the KV cache. Each `StreamSession.feed` runs only the new response tokens. Sessions are
independent; each has its own lock. The per-token bookkeeping (which ids count, the debounced
decision, the trip verdict) is the session's `ResponseLedger` (``session_ledger.py``): `feed`,
`afeed` and `peek` plan a run there, make the one model call, and apply its rows there.
`AsyncStreamSession` (``asession.py``, re-exported here) is the async twin.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import threading
import time
import weakref
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from ..backends.stream.engine import StreamEngine
from ..backends.stream.prompt import stream_prompt_ids
from ..backends.stream.runtime import StreamRunner
from ..core.errors import InvalidInputError, SessionClosedError
from ..core.labels import Level, Role
from ..core.messages import MessagesInput, prompt_messages
from ..core.policy import Policy
from ..core.stream_rule import ThinkMode
from ..core.verdict import Verdict
from .asession import AsyncStreamSession
from .retokenizer import Retokenizer
from .session_ledger import BACKEND_NAME, Record, ResponseLedger, StepPlan, StreamUpdate

__all__ = ["AsyncStreamSession", "StreamSession", "StreamUpdate"]


class StreamSession:
    """See the module docstring. Create it with ``Qwen3StreamGuard.session(messages)``."""

    def __init__(
        self,
        runner: StreamRunner,
        tokenizer: Any,
        messages: MessagesInput,
        *,
        policy: Policy | None = None,
        debounce: int = 2,
        think: ThinkMode = "moderate",
        retokenizer_backend: Any = None,
        model_name: str | None = None,
        engine: StreamEngine | None = None,
    ) -> None:
        msgs = prompt_messages(messages)
        self._runner = runner
        self._engine = engine
        self._tok = tokenizer
        self.policy = policy or Policy()
        self.model_name = model_name
        self._lock = threading.Lock()
        self._ledger = ResponseLedger(tokenizer, self.policy, debounce, think, model_name)
        self._retok = Retokenizer(retokenizer_backend or tokenizer)
        self._closed = False
        # the last peek's tail: its ids, per id (fed?, result when counted), and how many KV
        # positions it left past the committed ones (the next peek reuses their common prefix)
        self._spec_ids: list[int] = []
        self._spec_rec: Record = []
        self._spec_fed = 0
        started = time.perf_counter()
        # message text is tokenized as plain text: a "<|im_end|>" typed in a message stays text
        ids = stream_prompt_ids(tokenizer, msgs)
        self._context = int(getattr(runner.loaded.config, "max_position_embeddings", 0) or 0)
        if self._context and len(ids) > self._context:
            raise InvalidInputError(
                f"the conversation takes {len(ids)} tokens, more than this Stream model's "
                f"{self._context}-token context; check fewer turns or shorter text"
            )
        im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
        ends = [i for i, t in enumerate(ids) if t == im_end]
        if not ends:
            raise InvalidInputError("the chat template produced no <|im_end|> after the user turn")
        at = ends[-1]
        self.prompt_ids: tuple[int, ...] = tuple(ids)
        self._cache: Any = runner.new_cache() if engine is None else engine.open()
        if engine is not None:  # a session dropped without close() gives its slot back
            weakref.finalize(self, engine.close_later, self._cache)
        try:
            rows = runner.query_rows(self._forward(ids, query=True))
        except BaseException:
            self._drop()
            raise
        level = rows.levels[at]
        self.prompt_verdict = Verdict(
            level=level,
            categories=() if level is Level.SAFE else (rows.categories[at],),
            role=Role.PROMPT,
            scores=rows.scores[at],
            model=model_name,
            backend=BACKEND_NAME,
            latency_ms=(time.perf_counter() - started) * 1000,
        )

    # -- state -------------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        """True after `close`."""
        return self._closed

    @property
    def cache(self) -> Any:
        """The session's KV cache (None once closed)."""
        return self._cache

    @property
    def cached_tokens(self) -> int:
        """How many positions the KV cache holds for the committed response (0 once closed); a
        peek's speculative tail is not counted."""
        return self._raw_length() - self._spec_fed

    def _raw_length(self) -> int:
        if self._cache is None:
            return 0
        if self._engine is not None:
            return int(self._cache.length)
        return int(self._cache.get_seq_length())

    @property
    def verdict(self) -> Verdict | None:
        """The response verdict of the most severe trip so far (None while Safe)."""
        return self._ledger.verdict

    @property
    def decision(self) -> Level:
        """The debounced decision so far."""
        return self._ledger.debouncer.decision

    @property
    def blocked(self) -> bool:
        """Whether the policy blocks the response so far."""
        return self._ledger.blocked

    @property
    def response_ids(self) -> tuple[int, ...]:
        """Every response token id received so far (fed, scaffolding or skipped)."""
        return tuple(self._ledger.ids_seen)

    @property
    def _counted_at(self) -> list[int]:
        # for each moderated token: its index in `response_ids` (a reliability test reads it)
        return self._ledger.counted_at

    @property
    def debounce(self) -> int:
        """How many consecutive flagged tokens trip the decision."""
        return self._ledger.debouncer.n

    @property
    def settled_ids(self) -> int:
        """How many leading response ids can no longer be part of a future trip.

        A moderated token is settled once ``debounce - 1`` more tokens have been moderated after
        it: any trip that includes it has happened by then. Ids that were not moderated
        (scaffolding, skipped think content) settle with the moderated token after them.
        """
        with self._lock:
            return self._ledger.settled_ids

    def decode_response(self, start: int = 0, stop: int | None = None) -> str:
        """The text of response ids ``start:stop`` (special tokens kept)."""
        with self._lock:
            ids = self._ledger.ids_seen[start:stop]
        return str(self._tok.decode(ids, skip_special_tokens=False))

    def response_source(self, start: int = 0, stop: int | None = None) -> str | None:
        """The text of response ids ``start:stop`` exactly as it was fed (no normalisation:
        what a hold-back releases must be what the LLM wrote), or None when token ids were fed
        (then only `decode_response` can say)."""
        with self._lock:
            if self._retok.emitted != len(self._ledger.ids_seen):
                return None
            return self._retok.source_text(start, stop)

    # -- feeding -----------------------------------------------------------------------------
    def feed(self, piece: str | int | Sequence[int]) -> StreamUpdate:
        """Moderate the next piece of the response: a text piece, a token id or a list of ids.

        Text pieces are re-tokenized into Qwen3 ids; ids whose text may still change are held
        back until more text arrives or `finish` is called. Ids must be Qwen3 ids of the
        Stream tokenizer (the fast path when the LLM shares it) and cannot be mixed with held-back
        text.
        """
        with self._lock:
            return self._commit(self._piece_ids(piece))

    async def afeed(self, piece: str | int | Sequence[int]) -> StreamUpdate:
        """Async twin of `feed`: awaits the engine's step (a worker thread without one)."""
        async with self._alock():
            return await self._acommit(self._piece_ids(piece))

    def finish(self) -> StreamUpdate:
        """End of the response: moderate the text the re-tokenizer held back, and decide a
        flagged run that the end cut short (fewer than ``debounce`` tokens) as if complete."""
        with self._lock:
            self._check_open()
            return self._ledger.flushed(self._commit(self._retok.finish()))

    async def afinish(self) -> StreamUpdate:
        """Async twin of `finish`."""
        async with self._alock():
            self._check_open()
            return self._ledger.flushed(await self._acommit(self._retok.finish()))

    @contextlib.asynccontextmanager
    async def _alock(self) -> AsyncIterator[None]:
        if not self._lock.acquire(blocking=False):  # held by a sync call: wait off the loop
            await asyncio.to_thread(self._lock.acquire)
        try:
            yield
        finally:
            self._lock.release()

    def _commit(self, ids: list[int]) -> StreamUpdate:
        """`_run` for ids taken from the stream, failing closed (`_fail_closed`)."""
        with self._fail_closed(ids):
            return self._run(ids)

    async def _acommit(self, ids: list[int]) -> StreamUpdate:
        """`_commit` with the model call awaited (cancelled: the session closes too)."""
        with self._fail_closed(ids):
            return await self._arun(ids)

    @contextlib.contextmanager
    def _fail_closed(self, ids: list[int]) -> Iterator[None]:
        """If moderating ids taken from the stream fails, the session closes (fail closed).
        Their text has left the re-tokenizer and the KV cache may hold part of a forward, so
        going on would moderate the rest of the response with a hole in it."""
        if ids:  # the committed context changes: a peek's speculative tail no longer holds
            self._drop_speculation()
        try:
            yield
        except BaseException:
            self._closed = True
            self._drop()
            raise

    def _piece_ids(self, piece: str | int | Sequence[int]) -> list[int]:
        """The ids to moderate for ``piece`` (see `feed`)."""
        self._check_open()
        if isinstance(piece, str):
            ids = self._retok.push(piece)
        else:
            if isinstance(piece, (bytes, bytearray)):
                raise InvalidInputError("pieces must be str or token ids, not bytes")
            if isinstance(piece, int) and not isinstance(piece, bool):
                piece = [piece]
            if not isinstance(piece, Sequence):
                raise InvalidInputError(
                    f"pieces must be str, an int or a list of ints, not {type(piece).__name__}"
                )
            ids = self._runner.check_ids(list(piece))  # type: ignore[arg-type]
            if self._retok.pending_text:
                raise InvalidInputError(
                    "token ids fed while re-tokenized text is held back: call finish() first"
                )
        return ids

    def peek(self) -> StreamUpdate:
        """Moderate the text the re-tokenizer holds back, without committing it.

        For consumers that cannot hold text back (a callback that can only stop the stream):
        the held-back tail is tokenized as it stands, run on the KV cache, and rolled back, so
        the session is exactly as before. The update tells what the tail's tokens would trip
        now; its tokens' ids may differ from the ids the tail gets once more text arrives.
        """
        with self._lock:
            self._check_open()
            tail = self._retok.encode(self._retok.pending_text) if self._retok.pending_text else []
            if not tail:
                return self._ledger.update()
            cached = self.cached_tokens
            saved = self._ledger.snapshot()
            # the ids this tail shares with the last peek's ran on the same context: replay
            # their results instead of running them again (a long unbroken word is re-peeked at
            # every piece; running it whole each time was quadratic)
            keep = 0
            for a, b in zip(self._spec_ids, tail):
                if a != b:
                    break
                keep += 1
            rec = self._spec_rec[:keep]
            fed_keep = sum(fed for fed, _ in rec)
            ok = False
            try:
                if self._cache is not None and self._raw_length() > cached + fed_keep:
                    self._truncate(cached + fed_keep)
                self._spec_fed = 0
                start = len(self._ledger.counted_at)
                replayed, tripped = self._ledger.replay(tail[:keep], rec)
                update = self._run(tail[keep:], record=rec)
                ok = True
                return dataclasses.replace(
                    update,
                    tokens=(*replayed, *update.tokens),
                    start_index=start,
                    tripped=tripped or update.tripped,
                )
            finally:
                self._ledger.restore(saved)
                raw = self._raw_length()
                if ok and raw >= cached:
                    self._spec_ids, self._spec_rec, self._spec_fed = list(tail), rec, raw - cached
                else:
                    self._spec_ids, self._spec_rec, self._spec_fed = [], [], 0
                    if self._cache is not None and raw > cached:
                        self._truncate(cached)

    def _drop_speculation(self) -> None:
        """Cut a peek's speculative tail off the KV cache (before anything is committed)."""
        if self._spec_fed and self._cache is not None:
            self._truncate(self._raw_length() - self._spec_fed)
        self._spec_ids, self._spec_rec, self._spec_fed = [], [], 0

    def close(self) -> None:
        """Free the KV cache. Feeding afterwards raises `SessionClosedError`."""
        with self._lock:
            self._closed = True
            self._drop()

    def __enter__(self) -> StreamSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise SessionClosedError(
                "this stream session is closed (or a failed feed closed it: see the first error)"
            )

    # -- plan, one model call (the per-session cache or the shared engine), apply -------------
    def _run(self, ids: list[int], record: Record | None = None) -> StreamUpdate:
        """Moderate ``ids`` with the model call made here (the sync path; ``record``: see
        `ResponseLedger.apply`)."""
        step = self._plan(ids)
        logits = self._forward(step.to_feed, query=False) if step.to_feed else None
        return self._apply(step, logits, record)

    async def _arun(self, ids: list[int]) -> StreamUpdate:
        """`_run` with the model call awaited on the engine (a worker thread without one)."""
        step = self._plan(ids)
        logits = None
        if step.to_feed and self._engine is not None:
            logits = await self._engine.arun(self._cache, step.to_feed)
        elif step.to_feed:
            logits = await asyncio.to_thread(
                self._runner.forward, step.to_feed, self._cache, query=False
            )
        return self._apply(step, logits)

    def _plan(self, ids: list[int]) -> StepPlan:
        return self._ledger.plan(ids, context=self._context, cached=self.cached_tokens)

    def _apply(self, step: StepPlan, logits: Any, record: Record | None = None) -> StreamUpdate:
        rows = None if logits is None else self._runner.response_rows(logits)
        return self._ledger.apply(step, rows, record)

    def _forward(self, ids: list[int], *, query: bool) -> Any:
        if self._engine is not None:
            return self._engine.run(self._cache, ids, query=query)
        return self._runner.forward(ids, self._cache, query=query)

    def _drop(self) -> None:
        """Free the cache (the engine's slot); idempotent."""
        cache, self._cache = self._cache, None
        self._spec_ids, self._spec_rec, self._spec_fed = [], [], 0
        if cache is not None and self._engine is not None:
            self._engine.close_session(cache)

    def _truncate(self, keep: int) -> None:
        if self._engine is not None:
            self._engine.truncate(self._cache, keep)
        else:
            _crop(self._cache, keep)


def _crop(cache: Any, keep: int) -> None:
    """Cut a ``DynamicCache`` back to ``keep`` positions (``crop`` takes the number of tokens to
    remove, negative, in transformers 5; the length to keep before)."""
    params = inspect.signature(cache.crop).parameters
    if "tokens_to_remove" in params:
        cache.crop(-(int(cache.get_seq_length()) - keep))
    else:
        cache.crop(keep)
