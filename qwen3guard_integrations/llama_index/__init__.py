"""LlamaIndex integration: screen the query and retrieved context, guard the (streamed) answer.

- `Qwen3GuardNodePostprocessor`: a node postprocessor that checks the query and each
  retrieved node (drops or flags unsafe / injected nodes; never mutates its input).
- `GuardedQueryEngine`: wraps any query engine; checks the query before, the answer after,
  and a streamed answer token by token (with a `Qwen3StreamGuard`).
- `GuardedChatEngine`: wraps what ``index.as_chat_engine()`` returns (``condense_plus_context``,
  ``context``, ``simple``): the message before, every LLM output before the engine sees it,
  streamed answers held back; the engine's memory never holds a blocked answer.
- `Qwen3GuardVerdictEvent`: every verdict, sent through LlamaIndex instrumentation.

Needs ``llama-index-core``: ``pip install "qwen3guard-integrations[llama-index]"``.
"""

from ..core.deps import require

require("llama_index.core", "llama-index")

from .answer import GuardedAnswer  # noqa: E402
from .chat_engine import GuardedChatEngine, GuardedStreamingChatResponse  # noqa: E402
from .events import (  # noqa: E402
    DISPATCHER_NAME,
    Qwen3GuardVerdictEvent,
    Stage,
    aemit,
    aemit_verdict,
    dispatcher,
    emit,
    emit_verdict,
)
from .postprocessor import METADATA_KEY, Qwen3GuardNodePostprocessor, flag_node  # noqa: E402
from .query_engine import DEFAULT_REFUSAL, GuardedQueryEngine  # noqa: E402
from .streaming import (  # noqa: E402
    DEPRECATED_NAMES,
    aguard_token_gen,
    arelease,
    guard_token_gen,
    old_name,
    release,
)

__all__ = [
    "DEFAULT_REFUSAL",
    "DISPATCHER_NAME",
    "METADATA_KEY",
    "GuardedAnswer",
    "GuardedChatEngine",
    "GuardedQueryEngine",
    "GuardedStreamingChatResponse",
    "Qwen3GuardNodePostprocessor",
    "Qwen3GuardVerdictEvent",
    "Stage",
    "aemit",
    "aemit_verdict",
    "aguard_token_gen",
    "arelease",
    "dispatcher",
    "emit",
    "emit_verdict",
    "flag_node",
    "guard_token_gen",
    "release",
]


def __getattr__(name: str) -> object:
    # the old names (`streaming.DEPRECATED_NAMES`), kept for one minor release
    if name in DEPRECATED_NAMES:
        return old_name(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
