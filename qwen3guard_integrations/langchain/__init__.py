"""Qwen3Guard for LangChain: guard Runnables, routing, stream callbacks, a hold-back stream stage,
agent middleware and guarded tools.

Needs the ``langchain`` extra (``pip install "qwen3guard-integrations[langchain]"``); importing
this package without ``langchain-core`` raises `MissingDependencyError`.

- `PromptGuard`, `ResponseGuard`: pass-through checks before / after a model.
- `guard_chain`: prompt before, response after, stream during, for a whole chain.
- `Classify` and `is_safe`, `is_unsafe`, `is_controversial`,
  `has_category`, `is_blocked_by`: routing with ``RunnableBranch``.
- `Qwen3GuardStreamCallback` / `AsyncQwen3GuardStreamCallback`: stop any chat
  model's stream at the first blocked token.
- `HoldBackStage`: an LCEL stage that releases only what the Stream head cleared
  (``StreamGuard`` is its deprecated name).
- `Qwen3GuardMiddleware` for ``create_agent``; `guard_tool` for other agents.
- Verdicts: ``response_metadata["qwen3guard"]`` (`message_verdicts`) and the
  `VERDICT_EVENT` custom event.
"""

from ..core.deps import require

require("langchain_core", "langchain")

from .callbacks import AsyncQwen3GuardStreamCallback, Qwen3GuardStreamCallback  # noqa: E402
from .chain import GuardedChain, guard_chain  # noqa: E402
from .chat_model import GuardedChatModel, guard_model  # noqa: E402
from .guard_runnables import DEFAULT_REFUSAL, PromptGuard, ResponseGuard  # noqa: E402
from .options import deprecated_names  # noqa: E402
from .reporting import METADATA_KEY, VERDICT_EVENT, message_verdicts  # noqa: E402
from .routing import (  # noqa: E402
    Classify,
    has_category,
    is_blocked_by,
    is_controversial,
    is_safe,
    is_unsafe,
    verdict_of,
)
from .stream_stage import HoldBackStage  # noqa: E402

__all__ = [
    "DEFAULT_REFUSAL",
    "METADATA_KEY",
    "VERDICT_EVENT",
    "AsyncQwen3GuardStreamCallback",
    "Classify",
    "GuardedChain",
    "GuardedChatModel",
    "HoldBackStage",
    "PromptGuard",
    "Qwen3GuardMiddleware",
    "Qwen3GuardStreamCallback",
    "ResponseGuard",
    "guard_chain",
    "guard_model",
    "guard_tool",
    "has_category",
    "is_blocked_by",
    "is_controversial",
    "is_safe",
    "is_unsafe",
    "message_verdicts",
    "verdict_of",
]


def _stream_guard() -> object:
    from . import stream_stage

    return stream_stage._StreamGuard


_deprecated = deprecated_names(
    __name__, {"StreamGuard": ("qwen3guard_integrations.langchain.HoldBackStage", _stream_guard)}
)


def __getattr__(name: str) -> object:
    # the agent pieces need the ``langchain`` package itself, not only langchain-core
    if name in ("Qwen3GuardMiddleware", "guard_tool"):
        require("langchain", "langchain")
        from .middleware import Qwen3GuardMiddleware
        from .tools import guard_tool

        return {"Qwen3GuardMiddleware": Qwen3GuardMiddleware, "guard_tool": guard_tool}[name]
    return _deprecated(name, 2)
