"""LlamaIndex integration: screen the query and retrieved context, guard the (streamed) answer.

- `Qwen3GuardNodePostprocessor`: a node postprocessor that checks the query and each
  retrieved node (drops or flags unsafe / injected nodes; never mutates its input).
- `GuardedQueryEngine`: wraps any query engine; checks the query before, the answer after,
  and a streamed answer token by token (with a `Qwen3StreamGuard`).
- `Qwen3GuardVerdictEvent`: every verdict, sent through LlamaIndex instrumentation.

Needs ``llama-index-core``: ``pip install "qwen3guard-integrations[llama-index]"``.
"""

from ..core.deps import require

require("llama_index.core", "llama-index")

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
    OnUnsafe,
    StreamGuardConfig,
    aguard_token_gen,
    guard_token_gen,
)

__all__ = [
    "DEFAULT_REFUSAL",
    "DISPATCHER_NAME",
    "METADATA_KEY",
    "GuardedQueryEngine",
    "OnUnsafe",
    "Qwen3GuardNodePostprocessor",
    "Qwen3GuardVerdictEvent",
    "Stage",
    "StreamGuardConfig",
    "aemit",
    "aemit_verdict",
    "aguard_token_gen",
    "dispatcher",
    "emit",
    "emit_verdict",
    "flag_node",
    "guard_token_gen",
]
