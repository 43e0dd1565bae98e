"""How a `Qwen3Guard` is built: its ``from_*`` constructors, one per kind of Gen backend.

Each builds its backend from its own keywords and passes the shared `GuardOptions` (``policy``,
``fast``, ``normalize``, ``non_text``, ``max_batch``, ``max_wait_ms``) on to the guard, so every
option reaches every constructor. `Qwen3Guard` inherits them from `GenFactories`; a new serving
backend adds its constructor here (see CONTRIBUTING.md).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ..backends.base import GenBackend
from ..core.errors import InvalidInputError
from ..core.messages import UnicodeNormalization
from ..core.policy import Policy
from .options import GuardOptions

if TYPE_CHECKING:
    from typing_extensions import Self, Unpack

__all__ = ["GenFactories"]


class GenFactories:
    """The ``from_*`` constructors of `Qwen3Guard` (see the module docstring)."""

    if TYPE_CHECKING:

        def __init__(self, backend: GenBackend, **options: Any) -> None: ...

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
    ) -> Self:
        """Load a Qwen3Guard-Gen checkpoint with ``transformers`` (a Hub id or a local folder).

        ``device`` defaults to cuda when available, else cpu; ``dtype`` to bf16 on GPU (fp32 if
        the checkpoint declares fp32) and fp32 on CPU. ``fast=True`` reads the level from one forward pass and decodes categories and
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
        forced_answers: bool = True,
        revision: str | None = None,
        local_files_only: bool | None = None,
        **options: Unpack[GuardOptions],
    ) -> Self:
        """Check through a Text Generation Inference server at ``url`` (``/generate``).

        ``tokenizer`` is the served model's tokenizer: a Hub id or local folder (only tokenizer
        files are read) or a loaded tokenizer. The prompt is rendered on the client and decoded
        greedily on the server; level scores come from ``top_n_tokens``. Concurrent requests are
        bounded by ``max_concurrency`` and by the server's ``max_client_batch_size``; the input
        limit is read from ``/info`` unless ``max_input_tokens`` is given. 429 / 503 answers are
        retried ``max_retries`` times with backoff (``Retry-After`` honoured). In fast mode the
        answer is read from one-token forced-prefix requests (``forced_answers=False``: decoded
        after ``Safety:`` in one request; see the remote serving page).
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
            forced_answers=forced_answers,
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
        forced_answers: bool = True,
        revision: str | None = None,
        local_files_only: bool | None = None,
        **options: Unpack[GuardOptions],
    ) -> Self:
        """Check through an OpenAI-compatible server (vLLM, SGLang) serving ``model``.

        Uses the raw ``/v1/completions`` route with the prompt rendered on the client and sent as
        token ids (``prompt_as="ids"``, exact) or as server-safe text (``"text"``), greedy
        (``temperature: 0``), with ``logprobs`` for the level scores. ``tokenizer`` defaults to
        ``model`` (a Hub id). The input limit is read from ``/v1/models`` (vLLM's
        ``max_model_len``) unless ``max_input_tokens`` is given. ``forced_answers`` as in
        `from_tgi`.
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
            forced_answers=forced_answers,
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
    ) -> Self:
        """Check through a guard server (``qwen3guard serve``) at ``url``.

        The server runs the Gen model and returns `Verdict.to_dict` JSON; this guard's
        ``policy`` decides what blocks and what a failure means, as with any backend.
        ``token`` is the server's bearer token.
        """
        from ..backends.remote.guard_server import GuardServerGenBackend

        backend = GuardServerGenBackend.connect(url, token=token, headers=headers, timeout=timeout)
        return cls(backend, policy=policy, fast=fast, normalize=normalize)


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
