"""A moderation session over one conversation: prompt verdict, then token-by-token response checks.

A `StreamSession` renders the conversation with the Stream tokenizer's chat template, runs it
once (the prompt verdict is the query head at the ``<|im_end|>`` closing the last user turn) and
keeps the KV cache. Each `StreamSession.feed` runs only the new response tokens. Sessions are
independent; each has its own lock. `AsyncStreamSession` is the async twin: every model call
runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import inspect
import threading
import time
import weakref
from collections.abc import AsyncIterator, Generator, Sequence
from dataclasses import dataclass
from typing import Any

from ..backends.stream.engine import StreamEngine
from ..backends.stream.prompt import stream_prompt_ids
from ..backends.stream.runtime import StreamRunner, TokenResult
from ..core.errors import InvalidInputError, SessionClosedError
from ..core.labels import Level, Role
from ..core.messages import MessagesInput, prompt_messages
from ..core.policy import Policy
from ..core.stream_rule import Debouncer, PolicyRun, ThinkFilter, ThinkMode
from ..core.verdict import Verdict
from .retokenizer import Retokenizer

__all__ = ["AsyncStreamSession", "StreamSession", "StreamUpdate"]

BACKEND_NAME = "transformers-stream"


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
        self._debounce = Debouncer(debounce)
        self._policy_run = PolicyRun(self.policy, debounce)  # every token put to the policy
        self._filter = _think_filter(tokenizer, think)
        self._retok = Retokenizer(retokenizer_backend or tokenizer)
        self._ids_seen: list[int] = []  # every response id received, fed or not
        self._counted_at: list[int] = []  # for each moderated token: its index in _ids_seen
        self._verdict: Verdict | None = None
        self._last: TokenResult | None = None  # the last moderated token
        self._closed = False
        # the last peek's tail: its ids, per id (fed?, result when counted), and how many KV
        # positions it left past the committed ones (the next peek reuses their common prefix)
        self._spec_ids: list[int] = []
        self._spec_rec: list[tuple[bool, TokenResult | None]] = []
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
        return self._verdict

    @property
    def decision(self) -> Level:
        """The debounced decision so far."""
        return self._debounce.decision

    @property
    def blocked(self) -> bool:
        """Whether the policy blocks the response so far."""
        return self._verdict is not None and self.policy.blocks(self._verdict)

    @property
    def response_ids(self) -> tuple[int, ...]:
        """Every response token id received so far (fed, scaffolding or skipped)."""
        return tuple(self._ids_seen)

    @property
    def debounce(self) -> int:
        """How many consecutive flagged tokens trip the decision."""
        return self._debounce.n

    @property
    def settled_ids(self) -> int:
        """How many leading response ids can no longer be part of a future trip.

        A moderated token is settled once ``debounce - 1`` more tokens have been moderated after
        it: any trip that includes it has happened by then. Ids that were not moderated
        (scaffolding, skipped think content) settle with the moderated token after them.
        """
        with self._lock:
            j = len(self._counted_at) - self._debounce.n
            return 0 if j < 0 else self._counted_at[j] + 1

    def decode_response(self, start: int = 0, stop: int | None = None) -> str:
        """The text of response ids ``start:stop`` (special tokens kept)."""
        with self._lock:
            ids = self._ids_seen[start:stop]
        return str(self._tok.decode(ids, skip_special_tokens=False))

    def response_source(self, start: int = 0, stop: int | None = None) -> str | None:
        """The text of response ids ``start:stop`` exactly as it was fed (no normalisation:
        what a hold-back releases must be what the LLM wrote), or None when token ids were fed
        (then only `decode_response` can say)."""
        with self._lock:
            if self._retok.emitted != len(self._ids_seen):
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

    async def afinish(self) -> StreamUpdate:
        """Async twin of `finish`."""
        async with self._alock():
            self._check_open()
            return self._flushed(await self._acommit(self._retok.finish()))

    @contextlib.asynccontextmanager
    async def _alock(self) -> AsyncIterator[None]:
        if not self._lock.acquire(blocking=False):  # held by a sync call: wait off the loop
            await asyncio.to_thread(self._lock.acquire)
        try:
            yield
        finally:
            self._lock.release()

    async def _acommit(self, ids: list[int]) -> StreamUpdate:
        """`_commit` with the model call awaited (cancelled: the session closes too)."""
        if ids:  # the committed context changes: a peek's speculative tail no longer holds
            self._drop_speculation()
        try:
            return await self._arun(ids)
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

    def finish(self) -> StreamUpdate:
        """End of the response: moderate the text the re-tokenizer held back, and decide a
        flagged run that the end cut short (fewer than ``debounce`` tokens) as if complete."""
        with self._lock:
            self._check_open()
            return self._flushed(self._commit(self._retok.finish()))

    def _flushed(self, update: StreamUpdate) -> StreamUpdate:
        """``update`` after the end of the response decided a flagged run cut short."""
        flushed = self._debounce.flush()
        if (flushed or self._retrip(self._policy_run.flush())) and self._last is not None:
            self._verdict = self._trip_verdict(len(self._counted_at) - 1, self._last)
            update = dataclasses.replace(
                update,
                decision=self._debounce.decision,
                verdict=self._verdict,
                blocked=self.blocked,
                tripped=True,
            )
        return update

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
                return StreamUpdate(
                    (), len(self._counted_at), self.decision, self._verdict, self.blocked, False
                )
            cached = self.cached_tokens
            policy_run = copy.copy(self._policy_run)
            saved = (
                copy.copy(self._debounce),
                copy.copy(self._filter),
                len(self._ids_seen),
                len(self._counted_at),
                self._verdict,
                self._last,
            )
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
                start = len(self._counted_at)
                replayed, tripped = self._replay(tail[:keep], rec)
                update = self._run(tail[keep:], record=rec)
                ok = True
                return dataclasses.replace(
                    update,
                    tokens=(*replayed, *update.tokens),
                    start_index=start,
                    tripped=tripped or update.tripped,
                )
            finally:
                debounce, filt, n_seen, n_counted, verdict, last = saved
                self._debounce, self._filter, self._verdict = debounce, filt, verdict
                self._last, self._policy_run = last, policy_run
                del self._ids_seen[n_seen:]
                del self._counted_at[n_counted:]
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

    def _replay(
        self, ids: list[int], rec: list[tuple[bool, TokenResult | None]]
    ) -> tuple[list[TokenResult], bool]:
        """`_steps` for ids whose results are known (a peek's reused prefix): no model call."""
        tokens: list[TokenResult] = []
        tripped = False
        start = len(self._counted_at)
        for t, (_, tok) in zip(ids, rec):
            plan = self._filter.plan(t)
            self._ids_seen.append(t)
            if plan.feed and plan.count and tok is not None:
                self._counted_at.append(len(self._ids_seen) - 1)
                tokens.append(tok)
                self._last = tok
                raised = self._debounce.push(tok.level)
                if raised or self._retrip(self._policy_run.push(tok.level, tok.category)):
                    tripped = True
                    self._verdict = self._trip_verdict(start + len(tokens) - 1, tok)
        return tokens, tripped

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

    def _commit(self, ids: list[int]) -> StreamUpdate:
        """`_run` for ids taken from the stream: if moderating them fails, the session
        closes (fail closed). Their text has left the re-tokenizer and the KV cache may hold part
        of a forward, so going on would moderate the rest of the response with a hole in it."""
        if ids:  # the committed context changes: a peek's speculative tail no longer holds
            self._drop_speculation()
        try:
            return self._run(ids)
        except BaseException:
            self._closed = True
            self._drop()
            raise

    # -- the model calls (the per-session cache, or the shared engine) -----------------------
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

    def _run(
        self, ids: list[int], record: list[tuple[bool, TokenResult | None]] | None = None
    ) -> StreamUpdate:
        """`_steps` with the model call made here (the sync driver)."""
        steps = self._steps(ids, record)
        try:
            to_feed = next(steps)
            while True:
                to_feed = steps.send(self._forward(to_feed, query=False))
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    async def _arun(self, ids: list[int]) -> StreamUpdate:
        """`_steps` with the model call awaited on the engine (the async driver)."""
        steps = self._steps(ids)
        try:
            to_feed = next(steps)
            while True:
                if self._engine is not None:
                    logits = await self._engine.arun(self._cache, to_feed)
                else:
                    logits = await asyncio.to_thread(
                        self._runner.forward, to_feed, self._cache, query=False
                    )
                to_feed = steps.send(logits)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    def _steps(
        self, ids: list[int], record: list[tuple[bool, TokenResult | None]] | None = None
    ) -> Generator[list[int], Any, StreamUpdate]:
        """Plan which ids run, yield them for the model call, and decide on its logits
        (``record``, when given, gets each id's (fed?, result) for a later peek's replay)."""
        if self._context and self.cached_tokens + len(ids) > self._context:
            # past the model's context its positions mean nothing: refuse (nothing committed);
            # len(ids) bounds what is fed, so the exact count is only taken near the limit
            probe = copy.copy(self._filter)
            fed = sum(probe.plan(t).feed for t in ids)
            if self.cached_tokens + fed > self._context:
                raise InvalidInputError(
                    f"the response would take the session past this Stream model's "
                    f"{self._context}-token context; it cannot be moderated further"
                )
        start = len(self._counted_at)
        to_feed: list[int] = []
        count_pos: list[int] = []  # for each counted token: its position in to_feed
        per_id: list[tuple[bool, int | None]] = []  # per id: fed?, index in count_pos
        for t in ids:
            plan = self._filter.plan(t)
            self._ids_seen.append(t)
            counted: int | None = None
            if plan.feed:
                to_feed.append(t)
                if plan.count:
                    counted = len(count_pos)
                    count_pos.append(len(to_feed) - 1)
                    self._counted_at.append(len(self._ids_seen) - 1)
            per_id.append((plan.feed, counted))
        tokens: list[TokenResult] = []
        tripped = False
        if to_feed:
            rows = self._runner.response_rows((yield to_feed))
            for k, p in enumerate(count_pos):
                tok = TokenResult(
                    token_id=to_feed[p],
                    level=rows.levels[p],
                    probability=rows.level_probs[p],
                    category=rows.categories[p],
                    category_probability=rows.category_probs[p],
                    scores=rows.scores[p],
                )
                tokens.append(tok)
                self._last = tok
                raised = self._debounce.push(tok.level)
                if raised or self._retrip(self._policy_run.push(tok.level, tok.category)):
                    tripped = True
                    self._verdict = self._trip_verdict(start + k, tok)
        if record is not None:
            record += [(fed, None if c is None else tokens[c]) for fed, c in per_id]
        return StreamUpdate(
            tokens=tuple(tokens),
            start_index=start,
            decision=self._debounce.decision,
            verdict=self._verdict,
            blocked=self.blocked,
            tripped=tripped,
        )

    def _retrip(self, policy_blocks: bool) -> bool:
        """A run the policy blocks replaces a trip the policy allowed (`PolicyRun`)."""
        return policy_blocks and not self.blocked

    def _trip_verdict(self, index: int, tok: TokenResult) -> Verdict:
        upto = self._counted_at[index] + 1
        text = self._tok.decode(self._ids_seen[:upto], skip_special_tokens=False)
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


def _crop(cache: Any, keep: int) -> None:
    """Cut a ``DynamicCache`` back to ``keep`` positions (``crop`` takes the number of tokens to
    remove, negative, in transformers 5; the length to keep before)."""
    params = inspect.signature(cache.crop).parameters
    if "tokens_to_remove" in params:
        cache.crop(-(int(cache.get_seq_length()) - keep))
    else:
        cache.crop(keep)


def _think_filter(tokenizer: Any, mode: ThinkMode) -> ThinkFilter:
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


class AsyncStreamSession:
    """Async twin of `StreamSession`: ``async with guard.asession(messages) as s``.

    The prompt pass on entry runs in a worker thread; `afeed` and `afinish` await the
    shared `StreamEngine`'s step when the guard has one (a worker thread otherwise), so the
    event loop never blocks on the model.
    """

    def __init__(self, factory: Any) -> None:
        self._factory = factory
        self._session: StreamSession | None = None

    async def start(self) -> AsyncStreamSession:
        """Render and run the prompt (in a worker thread). Idempotent."""
        if self._session is None:
            self._session = await asyncio.to_thread(self._factory)
        return self

    @property
    def session(self) -> StreamSession:
        """The underlying sync session (after `start`)."""
        if self._session is None:
            raise SessionClosedError("the async session has not been started: use 'async with'")
        return self._session

    @property
    def prompt_verdict(self) -> Verdict:
        """The prompt verdict (after `start`)."""
        return self.session.prompt_verdict

    @property
    def verdict(self) -> Verdict | None:
        """The response verdict of the most severe trip so far."""
        return self.session.verdict

    async def afeed(self, piece: str | int | Sequence[int]) -> StreamUpdate:
        """`StreamSession.afeed`."""
        return await self.session.afeed(piece)

    async def apeek(self) -> StreamUpdate:
        """`StreamSession.peek` in a worker thread."""
        return await asyncio.to_thread(self.session.peek)

    async def afinish(self) -> StreamUpdate:
        """`StreamSession.afinish`."""
        return await self.session.afinish()

    async def aclose(self) -> None:
        """Free the KV cache."""
        if self._session is not None:
            await asyncio.to_thread(self._session.close)

    async def __aenter__(self) -> AsyncStreamSession:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
