"""``Qwen3Guard``: the Gen guard object every adapter talks to."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from .backends.base import GenBackend
from .backends.batcher import MicroBatcher
from .core.errors import BackendError, InvalidInputError, Qwen3GuardError
from .core.labels import Role
from .core.messages import (
    Message,
    MessagesInput,
    moderation_role,
    normalize_messages,
    prompt_messages,
    response_messages,
)
from .core.policy import Policy
from .core.verdict import Verdict

__all__ = ["CheckItem", "Qwen3Guard"]

#: One item of :meth:`Qwen3Guard.check_batch`: a prompt (str / message / message list ending with
#: the user) checked as a prompt, a message list ending with the assistant checked as a
#: response, or a ``(prompt, response)`` pair.
CheckItem = MessagesInput | tuple[MessagesInput, MessagesInput]


class Qwen3Guard:
    """Checks prompts and responses with a Qwen3Guard-Gen model and applies a :class:`Policy`.

    Build one with :meth:`from_pretrained` (local ``transformers``); other constructors come with
    the serving backends. Every ``check_*`` returns a :class:`Verdict`; :meth:`enforce` raises
    :class:`UnsafeContentError` for a blocked one. Backend failures raise
    :class:`BackendError` (fail-closed, the default) or, under ``Policy(on_error="fail_open")``,
    return an allowed verdict marked ``degraded=True``. Bad input always raises
    :class:`InvalidInputError`.

    Concurrent ``acheck_*`` calls (and ``check_prompt`` / ``check_response`` from several threads)
    are coalesced into batched forwards by a micro-batcher (``max_batch``, ``max_wait_ms``).
    """

    def __init__(
        self,
        backend: GenBackend,
        *,
        policy: Policy | None = None,
        fast: bool = True,
        max_batch: int = 16,
        max_wait_ms: float = 5.0,
        non_text: str = "error",
    ) -> None:
        self.backend = backend
        self.policy = policy or Policy()
        self.fast = fast
        self.non_text = non_text
        self._batcher: MicroBatcher[tuple[Message, ...], Verdict | Exception] = MicroBatcher(
            self._run_batch, max_batch=max_batch, max_wait_ms=max_wait_ms
        )

    @classmethod
    def from_pretrained(
        cls,
        model_id_or_path: str,
        *,
        device: Any = None,
        dtype: Any = None,
        policy: Policy | None = None,
        fast: bool = True,
        max_batch: int = 16,
        max_wait_ms: float = 5.0,
        max_new_tokens: int = 64,
        max_input_tokens: int | None = None,
        window_overlap: int = 64,
        batch_size: int = 8,
        revision: str | None = None,
        local_files_only: bool | None = None,
    ) -> Qwen3Guard:
        """Load a Qwen3Guard-Gen checkpoint with ``transformers`` (a Hub id or a local folder).

        ``device`` defaults to cuda when available, else cpu; ``dtype`` to bf16 on GPU and fp32
        on CPU. ``fast=True`` reads the level from one forward pass and decodes categories and
        refusal only when needed; ``fast=False`` decodes the whole answer greedily. Input longer
        than ``max_input_tokens`` (default: the model's context less the answer budget) is checked
        in windows overlapping by ``window_overlap`` tokens, and the worst verdict wins.
        """
        from .backends.local_gen import TransformersGenBackend

        backend = TransformersGenBackend.from_pretrained(
            str(model_id_or_path),
            device=device,
            dtype=dtype,
            revision=revision,
            local_files_only=local_files_only,
            max_new_tokens=max_new_tokens,
            max_input_tokens=max_input_tokens,
            window_overlap=window_overlap,
            batch_size=batch_size,
        )
        return cls(backend, policy=policy, fast=fast, max_batch=max_batch, max_wait_ms=max_wait_ms)

    # --- input forms ---------------------------------------------------------------------------

    def _conversation(self, item: CheckItem) -> tuple[Message, ...]:
        opts: dict[str, Any] = {"non_text": self.non_text}
        if isinstance(item, tuple) and len(item) == 2 and not isinstance(item, Message):
            return tuple(response_messages(item[0], item[1], **opts))
        msgs = normalize_messages(item, **opts)  # type: ignore[arg-type]
        moderation_role(msgs)
        return tuple(msgs)

    # --- running ---------------------------------------------------------------------------

    def _run_batch(self, conversations: list[tuple[Message, ...]]) -> list[Verdict | Exception]:
        return self.backend.check_batch(conversations, fast=self.fast)

    def _settle(self, result: Verdict | BaseException, role: Role, started: float) -> Verdict:
        """A verdict, or the policy's answer to a failure (raise, or a degraded verdict)."""
        if isinstance(result, Verdict):
            return result
        if isinstance(result, InvalidInputError):
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

    def _check_one(self, convo: tuple[Message, ...]) -> Verdict:
        started = time.perf_counter()
        role = moderation_role(convo)
        try:
            result: Verdict | BaseException = self._batcher.submit(convo).result()
        except Exception as exc:
            result = exc
        return self._settle(result, role, started)

    async def _acheck_one(self, convo: tuple[Message, ...]) -> Verdict:
        started = time.perf_counter()
        role = moderation_role(convo)
        try:
            result: Verdict | BaseException = await self._batcher.asubmit(convo)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            result = exc
        return self._settle(result, role, started)

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

        Bad input in any item raises :class:`InvalidInputError` before anything runs.
        """
        if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
            raise InvalidInputError("check_batch takes a list of items")
        convos = [self._conversation(item) for item in items]
        started = time.perf_counter()
        try:
            results: list[Verdict | Exception] = list(
                self.backend.check_batch(convos, fast=self.fast)
            )
        except Exception as exc:
            results = [exc] * len(convos)
        return [self._settle(r, moderation_role(c), started) for r, c in zip(results, convos)]

    async def acheck(self, messages: MessagesInput) -> Verdict:
        """Async twin of :meth:`check`."""
        return await self._acheck_one(self._conversation(messages))

    async def acheck_prompt(self, prompt: MessagesInput) -> Verdict:
        """Async twin of :meth:`check_prompt` (micro-batched with concurrent calls)."""
        return await self._acheck_one(tuple(prompt_messages(prompt, non_text=self.non_text)))

    async def acheck_response(
        self, prompt: MessagesInput | None, response: MessagesInput | None = None
    ) -> Verdict:
        """Async twin of :meth:`check_response` (micro-batched with concurrent calls)."""
        return await self._acheck_one(
            tuple(response_messages(prompt, response, non_text=self.non_text))
        )

    async def acheck_batch(self, items: Sequence[CheckItem]) -> list[Verdict]:
        """Async twin of :meth:`check_batch`; runs off the event loop, through the micro-batcher."""
        if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
            raise InvalidInputError("acheck_batch takes a list of items")
        convos = [self._conversation(item) for item in items]
        return list(await asyncio.gather(*(self._acheck_one(c) for c in convos)))

    def enforce(self, verdict: Verdict) -> Verdict:
        """Return ``verdict`` if the policy allows it; raise :class:`UnsafeContentError` if not."""
        return self.policy.enforce(verdict)

    def blocks(self, verdict: Verdict) -> bool:
        """Whether the policy blocks ``verdict``."""
        return self.policy.blocks(verdict)

    def close(self) -> None:
        """Stop the micro-batcher's worker thread."""
        self._batcher.close()

    def __enter__(self) -> Qwen3Guard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Qwen3Guard(model={self.backend.model_id!r}, backend={self.backend.name!r}, fast={self.fast})"
