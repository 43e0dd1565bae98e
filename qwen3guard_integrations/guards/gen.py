"""``Qwen3Guard``: the Gen guard object every adapter talks to."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from ..backends.base import BackendHealth, GenBackend
from ..core.errors import BackendError, InvalidInputError, Qwen3GuardError, SessionClosedError
from ..core.labels import Role
from ..core.messages import (
    Message,
    MessagesInput,
    UnicodeNormalization,
    moderation_role,
    normalize_conversation,
    normalize_messages,
    normalize_unicode,
    prompt_messages,
    response_messages,
)
from ..core.policy import Policy
from ..core.verdict import Verdict
from .batcher import MicroBatcher
from .gen_factories import GenFactories

__all__ = ["CheckItem", "Qwen3Guard"]

#: One item of `Qwen3Guard.check_batch`: a prompt (str / message / message list ending with
#: the user) checked as a prompt, a message list ending with the assistant checked as a
#: response, or a ``(prompt, response)`` pair.
CheckItem = MessagesInput | tuple[MessagesInput, MessagesInput]


class Qwen3Guard(GenFactories):
    """Checks prompts and responses with a Qwen3Guard-Gen model and applies a `Policy`.

    Build one with `from_pretrained` (local ``transformers``), `from_tgi` (a TGI
    server) or `from_openai` (vLLM / SGLang); each takes the same `GuardOptions` keywords
    (``policy``, ``fast``, ``normalize``, ``non_text``, ``max_batch``, ``max_wait_ms``). Every ``check_*`` returns a `Verdict`; `enforce` raises
    `UnsafeContentError` for a blocked one. Backend failures raise
    `BackendError` (fail-closed, the default) or, under ``Policy(on_error="fail_open")``,
    return an allowed verdict marked ``degraded=True``. Bad input always raises
    `InvalidInputError`.

    ``normalize`` (every constructor) takes Unicode disguises off the text the model reads:
    ``"format"`` removes zero-width and other invisible format characters, ``"nfkc"`` also folds
    full-width and mathematical letters (see `normalize_unicode`); the
    default ``"none"`` checks the text as written.

    With a local model, concurrent ``acheck_*`` calls (and ``check_prompt`` / ``check_response``
    from several threads) are coalesced into batched forwards by a micro-batcher (``max_batch``;
    a lone check is dispatched at once, checks that arrive during a forward share the next one;
    ``max_wait_ms`` adds an optional wait for peers); a serving backend sends concurrent requests
    itself, with native async I/O.

    `close` (or `aclose`) racing a check never turns it into a verdict it did not earn: the
    check finishes, or raises `SessionClosedError`, under any policy (never ``degraded``).
    """

    def __init__(
        self,
        backend: GenBackend,
        *,
        policy: Policy | None = None,
        fast: bool = True,
        max_batch: int = 16,
        max_wait_ms: float = 0.0,
        non_text: str = "error",
        normalize: UnicodeNormalization = "none",
    ) -> None:
        self.backend = backend
        # backends written against the first protocol (check_batch only) are micro-batched
        self._coalesce = bool(getattr(backend, "coalesce", True))
        self._closed = False
        self.policy = policy or Policy()
        self.fast = fast
        self.non_text = non_text
        normalize_unicode("", normalize)  # a bad mode fails here, not at the first check
        self.normalize: UnicodeNormalization = normalize
        self._batcher: MicroBatcher[tuple[Message, ...], Verdict | Exception] = MicroBatcher(
            self._run_batch, max_batch=max_batch, max_wait_ms=max_wait_ms
        )

    # --- input forms ---------------------------------------------------------------------------

    def _conversation(self, item: CheckItem) -> tuple[Message, ...]:
        opts: dict[str, Any] = {"non_text": self.non_text}
        if isinstance(item, tuple) and len(item) == 2 and not isinstance(item, Message):
            return tuple(response_messages(item[0], item[1], **opts))
        msgs = normalize_messages(item, **opts)
        moderation_role(msgs)
        return tuple(msgs)

    # --- running ---------------------------------------------------------------------------

    def _run_batch(self, conversations: list[tuple[Message, ...]]) -> list[Verdict | Exception]:
        return self.backend.check_batch(conversations, fast=self.fast)

    def _check_open(self) -> None:
        # a closed guard is a programming error, not a backend failure: never "degraded"
        if self._closed:
            raise SessionClosedError("this guard is closed; create a new one")

    def _items(self, items: Sequence[CheckItem], name: str) -> list[tuple[Message, ...]]:
        """The conversations of a batch; bad input in any item raises before anything runs."""
        if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
            raise InvalidInputError(f"{name} takes a list of items")
        self._check_open()
        return [self._conversation(item) for item in items]

    def _normalized(self, convos: list[tuple[Message, ...]]) -> list[tuple[Message, ...]]:
        return [normalize_conversation(c, self.normalize) for c in convos]

    # a check is: plan (`_prepare`), one I/O call (`_call_one` / `_acall_one`, or the backend's
    # batch call), apply (`_settle`); the sync and async paths differ only in the call
    def _prepare(self, convo: tuple[Message, ...]) -> tuple[tuple[Message, ...], Role, float]:
        self._check_open()
        convo = normalize_conversation(convo, self.normalize)
        started = time.perf_counter()
        return convo, moderation_role(convo), started

    def _call_one(self, convo: tuple[Message, ...]) -> Verdict | BaseException:
        """The I/O call of one sync check: the micro-batcher, or the backend itself."""
        if self._coalesce:
            result: Verdict | BaseException = self._batcher.call(convo)
        else:
            result = self.backend.check_batch([convo], fast=self.fast)[0]
        return result

    async def _acall_one(self, convo: tuple[Message, ...]) -> Verdict | BaseException:
        """Async twin of `_call_one`."""
        if self._coalesce:
            return await self._batcher.asubmit(convo)
        return (await self.backend.acheck_batch([convo], fast=self.fast))[0]

    def _check_one(self, convo: tuple[Message, ...]) -> Verdict:
        convo, role, started = self._prepare(convo)
        try:
            result = self._call_one(convo)
        except Exception as exc:  # (a cancelled async check is no Exception: it propagates)
            result = exc
        return self._settle(result, role, started)

    async def _acheck_one(self, convo: tuple[Message, ...]) -> Verdict:
        convo, role, started = self._prepare(convo)
        try:
            result = await self._acall_one(convo)
        except Exception as exc:
            result = exc
        return self._settle(result, role, started)

    def _settle_all(
        self,
        results: Sequence[Verdict | BaseException],
        convos: list[tuple[Message, ...]],
        started: float,
    ) -> list[Verdict]:
        return [self._settle(r, moderation_role(c), started) for r, c in zip(results, convos)]

    def _settle(self, result: Verdict | BaseException, role: Role, started: float) -> Verdict:
        """A verdict, or the policy's answer to a failure (raise, or a degraded verdict)."""
        result = self._closed_during(result)
        if isinstance(result, Verdict):
            return result
        if isinstance(result, (InvalidInputError, SessionClosedError)):  # never "degraded"
            raise result
        latency = (time.perf_counter() - started) * 1000
        if self.policy.fail_open:
            return self.policy.degraded_verdict(
                result,
                role=role,
                model=self.backend.model_id,
                backend=self.backend.name,
                endpoint=self.backend.endpoint,
                latency_ms=latency,
            )
        if isinstance(result, Qwen3GuardError):  # BackendError, VerdictParseError, ...
            raise result
        raise BackendError(
            f"{self.backend.name} backend failed: {type(result).__name__}: {result}",
            backend=self.backend.name,
        ) from result

    def _closed_during(self, result: Verdict | BaseException) -> Verdict | BaseException:
        """A check that failed while the guard was being closed failed because of the close:
        it raises `SessionClosedError`, never a fail-open "degraded" Safe."""
        if self._closed and not isinstance(result, Verdict):
            if isinstance(result, SessionClosedError):
                return result
            closed = SessionClosedError("the guard was closed while this check was running")
            closed.__cause__ = result
            return closed
        return result

    # --- public API ----------------------------------------------------------------------------

    def check(self, messages: MessagesInput) -> Verdict:
        """Check a conversation; the mode follows its last message (user: prompt, assistant:
        response)."""
        return self._check_one(self._conversation(messages))

    def check_prompt(self, prompt: MessagesInput) -> Verdict:
        """Check a prompt: a string, a message, or a message list ending with the user turn."""
        return self._check_one(tuple(prompt_messages(prompt, non_text=self.non_text)))

    def check_response(
        self, prompt: MessagesInput | None, response: MessagesInput | None = None
    ) -> Verdict:
        """Check a response in the context of its prompt; or pass one message list ending with the
        assistant turn as ``prompt`` and leave ``response`` out."""
        return self._check_one(tuple(response_messages(prompt, response, non_text=self.non_text)))

    def check_batch(self, items: Sequence[CheckItem]) -> list[Verdict]:
        """Check many items in padded batches (left padding); verdicts in input order.

        Bad input in any item raises `InvalidInputError` before anything runs.
        """
        convos = self._normalized(self._items(items, "check_batch"))
        started = time.perf_counter()
        try:
            results: list[Verdict | BaseException] = list(
                self.backend.check_batch(convos, fast=self.fast)
            )
        except Exception as exc:
            results = [exc] * len(convos)
        return self._settle_all(results, convos, started)

    async def acheck(self, messages: MessagesInput) -> Verdict:
        """Async twin of `check`."""
        return await self._acheck_one(self._conversation(messages))

    async def acheck_prompt(self, prompt: MessagesInput) -> Verdict:
        """Async twin of `check_prompt` (micro-batched with concurrent calls)."""
        return await self._acheck_one(tuple(prompt_messages(prompt, non_text=self.non_text)))

    async def acheck_response(
        self, prompt: MessagesInput | None, response: MessagesInput | None = None
    ) -> Verdict:
        """Async twin of `check_response` (micro-batched with concurrent calls)."""
        return await self._acheck_one(
            tuple(response_messages(prompt, response, non_text=self.non_text))
        )

    async def acheck_batch(self, items: Sequence[CheckItem]) -> list[Verdict]:
        """Async twin of `check_batch`; runs off the event loop, through the micro-batcher."""
        convos = self._items(items, "acheck_batch")
        if self._coalesce:  # (each item is normalised in _acheck_one)
            return list(await asyncio.gather(*(self._acheck_one(c) for c in convos)))
        convos = self._normalized(convos)
        started = time.perf_counter()
        try:
            results: list[Verdict | BaseException] = list(
                await self.backend.acheck_batch(convos, fast=self.fast)
            )
        except Exception as exc:
            results = [exc] * len(convos)
        return self._settle_all(results, convos, started)

    def enforce(self, verdict: Verdict) -> Verdict:
        """Return ``verdict`` if the policy allows it; raise `UnsafeContentError` if not."""
        return self.policy.enforce(verdict)

    def blocks(self, verdict: Verdict) -> bool:
        """Whether the policy blocks ``verdict``."""
        return self.policy.blocks(verdict)

    def health(self) -> BackendHealth:
        """Whether the backend can serve checks now (a server's ``/health`` and info routes)."""
        health = getattr(self.backend, "health", None)
        if health is None:
            return BackendHealth(True, self.backend.name, self.backend.endpoint)
        result: BackendHealth = health()
        return result

    async def ahealth(self) -> BackendHealth:
        """Async twin of `health`."""
        ahealth = getattr(self.backend, "ahealth", None)
        if ahealth is None:
            return await asyncio.to_thread(self.health)
        result: BackendHealth = await ahealth()
        return result

    @property
    def closed(self) -> bool:
        """True once `close` / `aclose` has begun: new checks raise `SessionClosedError`."""
        return self._closed

    def close(self) -> None:
        """Stop the micro-batcher's worker thread and release the backend's connections.

        Checking afterwards raises `SessionClosedError` (under any policy)."""
        self._closed = True
        self._batcher.close()
        close = getattr(self.backend, "close", None)
        if close is not None:
            close()

    async def aclose(self) -> None:
        """`close`, plus the async connections of the running event loop."""
        self._closed = True
        self._batcher.close()
        aclose = getattr(self.backend, "aclose", None)
        if aclose is not None:
            await aclose()
        else:
            self.close()

    async def __aenter__(self) -> Qwen3Guard:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __enter__(self) -> Qwen3Guard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Qwen3Guard(model={self.backend.model_id!r}, backend={self.backend.name!r}, fast={self.fast})"
