"""``Qwen3StreamGuard``: the Qwen3Guard-Stream model behind one object.

```python
guard = Qwen3StreamGuard.from_pretrained("Qwen/Qwen3Guard-Stream-0.6B")  # device/dtype auto
with guard.session(messages) as s:           # prompt verdict at s.prompt_verdict
    for piece in llm_stream:                 # text pieces or Qwen3 token ids
        update = s.feed(piece)
        if update.blocked:
            break
    s.finish()                               # text pieces: flush the held-back tail
```

The official remote code's streaming pair is offered as well:
`Qwen3StreamGuard.stream_moderate_from_ids` and `Qwen3StreamGuard.close_stream`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ..core.deps import require
from ..core.errors import (
    CheckpointError,
    ConfigurationError,
    InvalidInputError,
    SessionClosedError,
)
from ..core.messages import MessagesInput
from ..core.policy import Policy

if TYPE_CHECKING:  # the session modules import torch: typed here, imported on first use
    from .retokenizer import Retokenizer
    from .session import AsyncStreamSession, StreamSession

__all__ = ["Qwen3StreamGuard", "StreamState"]


@dataclass
class StreamState:
    """The state of one compatibility stream (`Qwen3StreamGuard.stream_moderate_from_ids`).

    Holds the KV cache and how many positions it covers; ``closed`` after ``close_stream``.
    """

    cache: Any
    length: int = 0
    closed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class Qwen3StreamGuard:
    """A loaded Stream model, its tokenizer and the session defaults.

    Args:
        loaded: the loaded network (`load_stream_model`).
        tokenizer: the Stream checkpoint's tokenizer (a ``transformers`` fast tokenizer).
        policy: which decisions block (default `Policy.strict`: Controversial blocks too).
        debounce: consecutive non-Safe tokens of one level that trip the decision (default 2).
        think: ``"moderate"`` or ``"skip"`` the content of ``<think>`` blocks in responses.
        engine: run every session through one shared `StreamEngine` that batches the steps of
            concurrent sessions (default True; a model layout the engine does not cover falls
            back to per-session stepping). False steps each session on its own cache.
        engine_options: the engine's limits (``max_sessions``, ``max_cached_tokens``,
            ``on_full``, ``full_timeout_s``, ``idle_timeout_s``, ``prefill_chunk``, ...).
    """

    def __init__(
        self,
        loaded: Any,
        tokenizer: Any,
        *,
        policy: Policy | None = None,
        debounce: int = 2,
        think: Literal["moderate", "skip"] = "moderate",
        engine: bool = True,
        engine_options: Mapping[str, Any] | None = None,
    ) -> None:
        from ..backends.stream.engine import StreamEngine
        from ..backends.stream.runtime import StreamRunner
        from ..core.stream_rule import Debouncer
        from .retokenizer import backend_tokenizer

        Debouncer(debounce)  # validate early
        self.loaded = loaded
        self.tokenizer = tokenizer
        self.policy = policy or Policy.strict()
        self.debounce = debounce
        self.think = think
        self.runner = StreamRunner(loaded)
        self._backend_tok = backend_tokenizer(tokenizer)
        if engine_options and not engine:
            raise ConfigurationError("engine_options given with engine=False")
        self.engine: StreamEngine | None = None
        if engine and StreamEngine.supports(self.runner):
            self.engine = StreamEngine(self.runner, **dict(engine_options or {}))

    @classmethod
    def from_pretrained(
        cls,
        model_id_or_path: str | os.PathLike[str],
        *,
        device: Any = None,
        dtype: Any = None,
        policy: Policy | None = None,
        debounce: int = 2,
        think: Literal["moderate", "skip"] = "moderate",
        engine: bool = True,
        engine_options: Mapping[str, Any] | None = None,
        **hub_kwargs: Any,
    ) -> Qwen3StreamGuard:
        """Load a Stream checkpoint (Hub id or local folder) without remote code.

        ``device`` defaults to cuda when available, else cpu; ``dtype`` to bf16 on a GPU (fp32 if
        the checkpoint declares fp32) and fp32 on the CPU. Missing or unexpected weights raise `CheckpointError`.
        """
        from ..backends.stream.loading import load_stream_model

        transformers = require("transformers")
        loaded = load_stream_model(model_id_or_path, device=device, dtype=dtype, **hub_kwargs)
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(str(loaded.path))
        except Exception as exc:
            raise CheckpointError(
                f"cannot load the tokenizer of {loaded.path}: {exc}", path=str(loaded.path)
            ) from exc
        return cls(
            loaded,
            tokenizer,
            policy=policy,
            debounce=debounce,
            think=think,
            engine=engine,
            engine_options=engine_options,
        )

    @classmethod
    def from_server(
        cls,
        url: str,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 30.0,
        policy: Policy | None = None,
        debounce: int = 2,
        think: Literal["moderate", "skip"] = "moderate",
    ) -> Qwen3StreamGuard:
        """Sessions held by a guard server (``qwen3guard serve``) at ``url``, with this API.

        Returns a `RemoteStreamGuard`: ``session`` / ``asession`` open a session on the server
        (one WebSocket each, pinned to the replica holding its cache). A dropped connection
        mid-session raises a typed `BackendError` and closes the session (fail-closed), or gives
        ``degraded`` verdicts under ``Policy(on_error="fail_open")``.
        """
        from .remote import RemoteStreamGuard

        return RemoteStreamGuard.connect(
            url,
            token=token,
            headers=headers,
            timeout=timeout,
            policy=policy,
            debounce=debounce,
            think=think,
        )

    @property
    def model(self) -> Any:
        """The ``Qwen3GuardStreamModel`` network."""
        return self.loaded.model

    @property
    def device(self) -> Any:
        """The device the model runs on."""
        return self.loaded.device

    @property
    def dtype(self) -> Any:
        """The model's parameter dtype."""
        return self.loaded.dtype

    def session(
        self,
        messages: MessagesInput,
        *,
        policy: Policy | None = None,
        debounce: int | None = None,
        think: Literal["moderate", "skip"] | None = None,
    ) -> StreamSession:
        """Start a `StreamSession` for ``messages``.

        ``messages`` must end with a user turn. The prompt is run at once; its verdict is at
        ``session.prompt_verdict``.
        """
        from .session import StreamSession

        return StreamSession(
            self.runner,
            self.tokenizer,
            messages,
            policy=policy or self.policy,
            debounce=self.debounce if debounce is None else debounce,
            think=think or self.think,
            retokenizer_backend=self._backend_tok,
            model_name=self.loaded.name,
            engine=self.engine,
        )

    def asession(
        self,
        messages: MessagesInput,
        *,
        policy: Policy | None = None,
        debounce: int | None = None,
        think: Literal["moderate", "skip"] | None = None,
    ) -> AsyncStreamSession:
        """An `AsyncStreamSession`: ``async with`` it."""
        from .session import AsyncStreamSession

        return AsyncStreamSession(
            lambda: self.session(messages, policy=policy, debounce=debounce, think=think)
        )

    def stats(self) -> dict[str, Any]:
        """The shared engine's `StreamEngine.stats` (live sessions, cached tokens, batch sizes,
        step latency percentiles); ``{"engine": False}`` without one."""
        return self.engine.stats() if self.engine is not None else {"engine": False}

    def retokenizer(self) -> Retokenizer:
        """A new `Retokenizer` for this model's tokenizer."""
        from .retokenizer import Retokenizer

        return Retokenizer(self._backend_tok)

    # -- the official streaming API ----------------------------------------------------------
    def stream_moderate_from_ids(
        self,
        token_ids: Any,
        role: Literal["user", "assistant"] = "user",
        stream_state: StreamState | None = None,
    ) -> tuple[dict[str, list[Any]], StreamState]:
        """Moderate ``token_ids`` appended to ``stream_state`` (a new stream when None).

        Returns ``(result, state)`` as the official remote code does: ``result`` holds parallel
        lists over the positions of ``token_ids`` (``[-1]`` is the newest): ``risk_level`` (label
        strings), ``risk_prob`` (probability of the winning class, 2 decimals), ``category`` and
        ``category_prob``. ``role="user"`` reads the query head, ``"assistant"`` the response
        head. Only the new ids run through the model (the KV cache is reused).
        """
        if role not in ("user", "assistant"):
            raise InvalidInputError(f"role must be 'user' or 'assistant', got {role!r}")
        if hasattr(token_ids, "tolist"):
            token_ids = token_ids.tolist()
        if isinstance(token_ids, int):
            token_ids = [token_ids]
        while (
            isinstance(token_ids, list) and len(token_ids) == 1 and isinstance(token_ids[0], list)
        ):
            token_ids = token_ids[0]  # a [1, T] batch
        if not isinstance(token_ids, (list, tuple)) or not token_ids:
            raise InvalidInputError("token_ids must be a non-empty list of ints")
        ids = self.runner.check_ids(list(token_ids))
        state = stream_state if stream_state is not None else StreamState(self.runner.new_cache())
        with state.lock:
            if state.closed:
                raise SessionClosedError("this stream state was closed with close_stream()")
            context = int(getattr(self.loaded.config, "max_position_embeddings", 0) or 0)
            if context and state.length + len(ids) > context:
                # as sessions do: positions past the context mean nothing to the model
                raise InvalidInputError(
                    f"this stream would take {state.length + len(ids)} positions, more than this "
                    f"Stream model's {context}-token context; start a new stream"
                )
            logits = self.runner.forward(ids, state.cache)
            state.length += len(ids)
        rows = (
            self.runner.query_rows(logits) if role == "user" else self.runner.response_rows(logits)
        )
        result: dict[str, list[Any]] = {
            "risk_level": [lv.value for lv in rows.levels],
            "risk_prob": [round(p, 2) for p in rows.level_probs],
            "category": [c.value for c in rows.categories],
            "category_prob": [round(p, 2) for p in rows.category_probs],
        }
        return result, state

    def close_stream(self, stream_state: StreamState) -> None:
        """Free the KV cache of a compatibility stream."""
        if not isinstance(stream_state, StreamState):
            raise InvalidInputError(f"not a stream state: {type(stream_state).__name__}")
        with stream_state.lock:
            stream_state.closed = True
            stream_state.cache = None
