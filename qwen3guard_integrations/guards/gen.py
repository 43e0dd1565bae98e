"""``Qwen3Guard``: the Gen guard object every adapter talks to."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

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
from .options import GuardOptions

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["CheckItem", "Qwen3Guard"]

#: One item of `Qwen3Guard.check_batch`: a prompt (str / message / message list ending with
#: the user) checked as a prompt, a message list ending with the assistant checked as a
#: response, or a ``(prompt, response)`` pair.
CheckItem = MessagesInput | tuple[MessagesInput, MessagesInput]


class Qwen3Guard:
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

    @classmethod
    def from_pretrained(
        cls,
        model_id_or_path: str,
        *,
        device: Any = None,
        dtype: Any = None,
        max_new_tokens: int = 64,
        max_input_tokens: int | None = None,
        window_overlap: int = 64,
        batch_size: int = 8,
        revision: str | None = None,
        local_files_only: bool | None = None,
        **options: Unpack[GuardOptions],
    ) -> Qwen3Guard:
        """Load a Qwen3Guard-Gen checkpoint with ``transformers`` (a Hub id or a local folder).

        ``device`` defaults to cuda when available, else cpu; ``dtype`` to bf16 on GPU and fp32
        on CPU. ``fast=True`` reads the level from one forward pass and decodes categories and
        refusal only when needed; ``fast=False`` decodes the whole answer greedily. Input longer
        than ``max_input_tokens`` (default: the model's context less the answer budget) is checked
        in windows overlapping by ``window_overlap`` tokens, and the worst verdict wins.
        """
        from ..backends.gen.local import TransformersGenBackend

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
        return cls(backend, **options)

    @classmethod
    def from_tgi(
        cls,
        url: str,
        *,
        tokenizer: Any,
        headers: dict[str, str] | None = None,
        token: str | None = None,
        timeout: float = 30.0,
        max_concurrency: int = 16,
        max_retries: int = 3,
        max_new_tokens: int = 64,
        max_input_tokens: int | None = None,
        window_overlap: int = 64,
        top_n_tokens: int = 5,
        revision: str | None = None,
        local_files_only: bool | None = None,
        **options: Unpack[GuardOptions],
    ) -> Qwen3Guard:
        """Check through a Text Generation Inference server at ``url`` (``/generate``).

        ``tokenizer`` is the served model's tokenizer: a Hub id or local folder (only tokenizer
        files are read) or a loaded tokenizer. The prompt is rendered on the client and decoded
        greedily on the server; level scores come from ``top_n_tokens``. Concurrent requests are
        bounded by ``max_concurrency`` and by the server's ``max_client_batch_size``; the input
        limit is read from ``/info`` unless ``max_input_tokens`` is given. 429 / 503 answers are
        retried ``max_retries`` times with backoff (``Retry-After`` honoured).
        """
        from ..backends.remote.tgi import TGIGenBackend

        backend = TGIGenBackend.connect(
            url,
            _tokenizer(tokenizer, revision, local_files_only),
            headers=headers,
            token=token,
            timeout=timeout,
            max_concurrency=max_concurrency,
            max_retries=max_retries,
            max_new_tokens=max_new_tokens,
            max_input_tokens=max_input_tokens,
            window_overlap=window_overlap,
            top_n_tokens=top_n_tokens,
        )
        return cls(backend, **options)

    @classmethod
    def from_openai(
        cls,
        base_url: str,
        *,
        model: str,
        tokenizer: Any = None,
        api_key: str | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 30.0,
        max_concurrency: int = 16,
        max_retries: int = 3,
        max_new_tokens: int = 64,
        max_input_tokens: int | None = None,
        window_overlap: int = 64,
        logprobs: int = 5,
        prompt_as: str = "ids",
        revision: str | None = None,
        local_files_only: bool | None = None,
        **options: Unpack[GuardOptions],
    ) -> Qwen3Guard:
        """Check through an OpenAI-compatible server (vLLM, SGLang) serving ``model``.

        Uses the raw ``/v1/completions`` route with the prompt rendered on the client and sent as
        token ids (``prompt_as="ids"``, exact) or as server-safe text (``"text"``), greedy
        (``temperature: 0``), with ``logprobs`` for the level scores. ``tokenizer`` defaults to
        ``model`` (a Hub id). The input limit is read from ``/v1/models`` (vLLM's
        ``max_model_len``) unless ``max_input_tokens`` is given.
        """
        from ..backends.remote.openai import OpenAIGenBackend

        backend = OpenAIGenBackend.connect(
            base_url,
            _tokenizer(tokenizer if tokenizer is not None else model, revision, local_files_only),
            model=model,
            api_key=api_key,
            headers=headers,
            timeout=timeout,
            max_concurrency=max_concurrency,
            max_retries=max_retries,
            max_new_tokens=max_new_tokens,
            max_input_tokens=max_input_tokens,
            window_overlap=window_overlap,
            logprobs=logprobs,
            prompt_as=prompt_as,
        )
        return cls(backend, **options)

    @classmethod
    def from_server(
        cls,
        url: str,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 30.0,
        policy: Policy | None = None,
        fast: bool = True,
        normalize: UnicodeNormalization = "none",
    ) -> Qwen3Guard:
        """Check through a guard server (``qwen3guard serve``) at ``url``.

        The server runs the Gen model and returns `Verdict.to_dict` JSON; this guard's
        ``policy`` decides what blocks and what a failure means, as with any backend.
        ``token`` is the server's bearer token.
        """
        from ..backends.remote.guard_server import GuardServerGenBackend

        backend = GuardServerGenBackend.connect(url, token=token, headers=headers, timeout=timeout)
        return cls(backend, policy=policy, fast=fast, normalize=normalize)

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

    def _settle(self, result: Verdict | BaseException, role: Role, started: float) -> Verdict:
        """A verdict, or the policy's answer to a failure (raise, or a degraded verdict)."""
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

    def _check_open(self) -> None:
        # a closed guard is a programming error, not a backend failure: never "degraded"
        if self._closed:
            raise SessionClosedError("this guard is closed; create a new one")

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

    def _check_one(self, convo: tuple[Message, ...]) -> Verdict:
        self._check_open()
        convo = normalize_conversation(convo, self.normalize)
        started = time.perf_counter()
        role = moderation_role(convo)
        try:
            if self._coalesce:
                result: Verdict | BaseException = self._batcher.call(convo)
            else:
                result = self.backend.check_batch([convo], fast=self.fast)[0]
        except Exception as exc:
            result = exc
        return self._settle(self._closed_during(result), role, started)

    async def _acheck_one(self, convo: tuple[Message, ...]) -> Verdict:
        self._check_open()
        convo = normalize_conversation(convo, self.normalize)
        started = time.perf_counter()
        role = moderation_role(convo)
        try:
            if self._coalesce:
                result: Verdict | BaseException = await self._batcher.asubmit(convo)
            else:
                result = (await self.backend.acheck_batch([convo], fast=self.fast))[0]
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            result = exc
        return self._settle(self._closed_during(result), role, started)

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
        if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
            raise InvalidInputError("check_batch takes a list of items")
        self._check_open()
        convos = [
            normalize_conversation(self._conversation(item), self.normalize) for item in items
        ]
        started = time.perf_counter()
        try:
            results: list[Verdict | Exception] = list(
                self.backend.check_batch(convos, fast=self.fast)
            )
        except Exception as exc:
            results = [exc] * len(convos)
        return [
            self._settle(self._closed_during(r), moderation_role(c), started)
            for r, c in zip(results, convos)
        ]

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
        if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
            raise InvalidInputError("acheck_batch takes a list of items")
        self._check_open()
        convos = [self._conversation(item) for item in items]
        if self._coalesce:  # (each item is normalised in _acheck_one)
            return list(await asyncio.gather(*(self._acheck_one(c) for c in convos)))
        convos = [normalize_conversation(c, self.normalize) for c in convos]
        started = time.perf_counter()
        try:
            results = list(await self.backend.acheck_batch(convos, fast=self.fast))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            results = [exc] * len(convos)
        return [
            self._settle(self._closed_during(r), moderation_role(c), started)
            for r, c in zip(results, convos)
        ]

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


def _tokenizer(source: Any, revision: str | None, local_files_only: bool | None) -> Any:
    """A loaded tokenizer as is; a Hub id or folder loaded with ``AutoTokenizer``."""
    if not isinstance(source, (str, os.PathLike)):
        if source is None or not callable(getattr(source, "apply_chat_template", None)):
            raise InvalidInputError(
                "tokenizer must be a Hub id, a local folder, or a loaded Hugging Face tokenizer"
            )
        return source
    from ..backends.loading import load_or_explain
    from ..core.deps import require

    transformers = require("transformers", "tgi")
    opts: dict[str, Any] = {"revision": revision}
    if local_files_only is not None:
        opts["local_files_only"] = local_files_only
    return load_or_explain(transformers.AutoTokenizer, str(source), "tokenizer of", **opts)
