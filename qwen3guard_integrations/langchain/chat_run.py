"""The pure parts of a `GuardedChatModel` run: its constructor checks, what opens its run, the
callback manager its inner call runs under, and the released chunks as results.

The model plans its run here, makes the one I/O call (the sync or async callback manager and
the guarded stream), and turns what it released into results here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManager,
    AsyncCallbackManagerForLLMRun,
    CallbackManager,
    CallbackManagerForLLMRun,
)
from langchain_core.messages import AIMessageChunk, BaseMessage, message_chunk_to_message
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult, LLMResult
from langchain_core.runnables import Runnable
from langchain_core.runnables.base import RunnableBindingBase

from ..core.actions import DEFAULT_REFUSAL, BlockAction, check_action, check_refusal
from ..core.errors import ConfigurationError
from ..guards.gen import Qwen3Guard
from ..guards.stream import Qwen3StreamGuard
from .prompt_check import PROMPT_CHECKS

__all__ = [
    "RunStart",
    "bind_inner_tools",
    "chat_result",
    "check_options",
    "child_manager",
    "generation_chunk",
    "llm_result",
    "name_of",
    "one",
    "partial_result",
    "token_of",
]

_ACTIONS = (BlockAction.RAISE, BlockAction.REFUSE)


@dataclass(frozen=True)
class RunStart:
    """What opens a streamed run (``stream`` / ``astream`` open it themselves).

    Attributes:
        messages: the input as messages.
        configure: the arguments of ``CallbackManager.configure`` (its async twin's too).
        start: the keywords of ``on_chat_model_start`` after the serialized model and messages.
    """

    messages: list[BaseMessage]
    configure: tuple[Any, ...]
    start: dict[str, Any]


def check_options(data: dict[str, Any]) -> None:
    """Constructor checks: a wrong object fails here, with what to pass instead."""
    model = data.get("model")
    if not isinstance(model, Runnable):
        raise ConfigurationError(
            f"guard_model needs a chat model (a LangChain Runnable), got {type(model).__name__}"
        )
    guard, sguard = data.get("guard"), data.get("stream_guard")
    if guard is None and sguard is None:
        raise ConfigurationError("guard_model needs a guard, a stream_guard or both")
    if guard is not None and not isinstance(guard, Qwen3Guard):
        raise ConfigurationError(
            f"guard must be a Qwen3Guard (Gen), got {type(guard).__name__}"
            + (
                ": pass a Qwen3StreamGuard as stream_guard"
                if isinstance(guard, Qwen3StreamGuard)
                else ""
            )
        )
    if sguard is not None and not isinstance(sguard, Qwen3StreamGuard):
        raise ConfigurationError(
            f"stream_guard must be a Qwen3StreamGuard, got {type(sguard).__name__}"
            + (": pass a Qwen3Guard as guard" if isinstance(sguard, Qwen3Guard) else "")
        )
    data["on_block"] = check_action(data.get("on_block", BlockAction.RAISE), allowed=_ACTIONS)
    data["refusal"] = check_refusal(data.get("refusal", DEFAULT_REFUSAL))
    if data.get("prompt_check", "before") not in PROMPT_CHECKS:
        raise ConfigurationError(
            f"prompt_check must be 'before' or 'parallel', got {data.get('prompt_check')!r}"
        )
    if data.get("reasoning", "moderate") not in ("moderate", "skip"):
        raise ConfigurationError(
            f"reasoning must be 'moderate' or 'skip', got {data.get('reasoning')!r}"
        )


def child_manager(
    run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun,
) -> CallbackManager | AsyncCallbackManager:
    """A callback manager for runs under ``run_manager``'s run (what ``get_child`` gives chain
    runs; LLM runs have none)."""
    cls = (
        AsyncCallbackManager
        if isinstance(run_manager, AsyncCallbackManagerForLLMRun)
        else CallbackManager
    )
    manager = cls(handlers=[], parent_run_id=run_manager.run_id)
    manager.set_handlers(run_manager.inheritable_handlers)
    manager.add_tags(run_manager.inheritable_tags)
    manager.add_metadata(run_manager.inheritable_metadata)
    return manager


def bind_inner_tools(inner: Any, tools: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    """``inner.bind_tools(tools)``, through the bindings around it (``with_retry()``, ...)."""
    bind = getattr(inner, "bind_tools", None)
    if callable(bind):
        return bind(tools, **kwargs)
    if isinstance(inner, RunnableBindingBase):  # with_retry(), with_config(), ...
        return inner.model_copy(update={"bound": bind_inner_tools(inner.bound, tools, kwargs)})
    raise NotImplementedError(f"the inner model ({type(inner).__name__}) cannot bind tools")


async def one(result: Awaitable[Any]) -> AsyncIterator[Any]:
    """An async stream of one item: the awaited ``result``."""
    yield await result


def name_of(model: Any) -> str:
    """The inner model's name (its type's when it cannot tell)."""
    try:
        return str(model.get_name())
    except Exception:  # a Runnable that cannot tell
        return type(model).__name__


def token_of(chunk: AIMessageChunk) -> str:
    """The token text ``on_llm_new_token`` reports for ``chunk``."""
    return chunk.content if isinstance(chunk.content, str) else chunk.text


def chat_result(chunks: list[AIMessageChunk]) -> ChatResult:
    """The released chunks merged into one message."""
    if not chunks:
        return ChatResult(
            generations=[
                ChatGeneration(message=message_chunk_to_message(AIMessageChunk(content="")))
            ]
        )
    merged = chunks[0]
    for c in chunks[1:]:
        merged = merged + c
    return ChatResult(generations=[ChatGeneration(message=message_chunk_to_message(merged))])


def llm_result(chunks: list[AIMessageChunk]) -> LLMResult:
    """The released chunks as ``on_llm_end`` takes them."""
    generations: list[Any] = list(chat_result(chunks).generations)
    return LLMResult(generations=[generations])


def partial_result(chunks: list[AIMessageChunk]) -> LLMResult:
    """What was released before an error, as ``on_llm_error`` takes it."""
    if not chunks:
        return LLMResult(generations=[])
    return llm_result(chunks)


def generation_chunk(chunk: AIMessageChunk) -> ChatGenerationChunk:
    """``chunk`` as the ``on_llm_new_token`` callbacks take it."""
    return ChatGenerationChunk(message=chunk)
