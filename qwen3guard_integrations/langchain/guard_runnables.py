"""Pass-through guard Runnables: `PromptGuard` before a model, `ResponseGuard` after.

Both pass their input on unchanged when the guard's policy allows it, dispatch a
`VERDICT_EVENT` custom event with the verdict, and on a block raise
`UnsafeContentError` (``on_block="raise"``, the default) or return a
refusal (``on_block="refuse"``). ``invoke`` / ``ainvoke`` / ``batch`` / ``abatch`` / ``stream`` /
``astream`` all work; async calls go through the guard's micro-batcher, so ``abatch`` runs as
batched forwards.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForChainRun, CallbackManagerForChainRun
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables import Runnable, RunnableConfig

from ..core.errors import InvalidInputError, UnsafeContentError
from ..core.verdict import Verdict
from ..guards.gen import Qwen3Guard
from .convert import EMPTY_USER, conversation_of, output_text, prompt_of
from .reporting import adispatch_verdict, dispatch_verdict, with_verdicts

__all__ = ["DEFAULT_REFUSAL", "OnBlock", "PromptGuard", "ResponseGuard", "refusal_message"]

OnBlock = Literal["raise", "refuse"]

#: The refusal returned by ``on_block="refuse"`` unless another is given.
DEFAULT_REFUSAL = "Sorry, this request was blocked by the safety guard."


def refusal_message(text: str, verdicts: dict[str, Verdict]) -> AIMessage:
    """An ``AIMessage`` refusal carrying the verdicts that caused it in its metadata."""
    return with_verdicts(AIMessage(content=text), verdicts)


def _check_on_block(on_block: str) -> None:
    if on_block not in ("raise", "refuse"):
        raise InvalidInputError(f"on_block must be 'raise' or 'refuse', got {on_block!r}")


class PromptGuard(Runnable[Any, Any]):
    """Checks the prompt and passes the input on unchanged when it is allowed.

    Accepts a string, a message, a message list (or ``(role, text)`` tuples), a ``PromptValue``,
    or a dict holding one of those under ``key`` (default ``"input"``).

    Args:
        guard: the `Qwen3Guard` that checks.
        key: the dict key holding the prompt.
        on_block: ``"raise"`` `UnsafeContentError`, or ``"refuse"``: return an
            ``AIMessage`` with ``refusal`` (its ``response_metadata["qwen3guard"]["prompt"]`` holds
            the verdict) instead of the input.
        refusal: the refusal text.
        name: the run name (default ``"PromptGuard"``).
    """

    def __init__(
        self,
        guard: Qwen3Guard,
        *,
        key: str = "input",
        on_block: OnBlock = "raise",
        refusal: str = DEFAULT_REFUSAL,
        name: str | None = None,
    ) -> None:
        _check_on_block(on_block)
        self.guard = guard
        self.key = key
        self.on_block = on_block
        self.refusal = refusal
        self.name = name or "PromptGuard"

    def _settle(self, value: Any, verdict: Verdict) -> Any:
        if not self.guard.blocks(verdict):
            return value
        if self.on_block == "raise":
            raise UnsafeContentError(verdict)
        return refusal_message(self.refusal, {"prompt": verdict})

    def _run(
        self, value: Any, run_manager: CallbackManagerForChainRun, config: RunnableConfig
    ) -> Any:
        verdict = self.guard.check_prompt(prompt_of(value, self.key))
        dispatch_verdict("prompt", verdict, self.guard.blocks(verdict), config)
        return self._settle(value, verdict)

    async def _arun(
        self, value: Any, run_manager: AsyncCallbackManagerForChainRun, config: RunnableConfig
    ) -> Any:
        verdict = await self.guard.acheck_prompt(prompt_of(value, self.key))
        await adispatch_verdict("prompt", verdict, self.guard.blocks(verdict), config)
        return self._settle(value, verdict)

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        """Check ``input``'s prompt; return ``input`` (allowed) or the refusal."""
        return self._call_with_config(self._run, input, config, **kwargs)

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        """Async twin of `invoke`."""
        return await self._acall_with_config(self._arun, input, config, **kwargs)


class ResponseGuard(Runnable[Any, Any]):
    """Checks a model's output, in the context of its prompt when the input holds it.

    Input forms: an ``AIMessage`` (or chunk) or a string (checked without context); a dict
    ``{input_key: prompt, output_key: output}``; a message list ending with the assistant's
    message. The output is returned with the verdict in
    ``response_metadata["qwen3guard"]["response"]`` (messages only; strings pass unchanged).
    A response without text (e.g. only tool calls) has nothing to moderate and passes unchanged.

    When streamed (after a model in ``model | ResponseGuard(guard)``), it gathers the chunks and
    releases the checked response as one chunk at the end: a Gen verdict needs the whole answer,
    and nothing unchecked is released. For token-level streaming use `StreamGuard`.

    Args:
        guard: the `Qwen3Guard` that checks.
        input_key, output_key: the dict keys of the prompt and the output.
        on_block: ``"raise"`` `UnsafeContentError`, or ``"refuse"``: put a refusal
            (an ``AIMessage``, or the text for a string output) in place of the output.
        refusal: the refusal text.
        name: the run name (default ``"ResponseGuard"``).
    """

    def __init__(
        self,
        guard: Qwen3Guard,
        *,
        input_key: str = "input",
        output_key: str = "output",
        on_block: OnBlock = "raise",
        refusal: str = DEFAULT_REFUSAL,
        name: str | None = None,
    ) -> None:
        _check_on_block(on_block)
        self.guard = guard
        self.input_key = input_key
        self.output_key = output_key
        self.on_block = on_block
        self.refusal = refusal
        self.name = name or "ResponseGuard"

    # the conversation to check, and how to rebuild the output from the (annotated) response
    def _plan(self, value: Any) -> tuple[list[dict[str, Any]] | None, Any]:
        if isinstance(value, Mapping) and self.output_key in value:
            out = value[self.output_key]
            text = output_text(out)
            if not text.strip():
                return None, out
            before: Any = [EMPTY_USER]
            if self.input_key in value:
                before = prompt_of(value[self.input_key], key=None)
                before = (
                    [{"role": "user", "content": before}] if isinstance(before, str) else before
                )
            return [*before, {"role": "assistant", "content": text}], out
        if isinstance(value, (str, BaseMessage)):
            text = output_text(value)
            if not text.strip():
                return None, value
            return [EMPTY_USER, {"role": "assistant", "content": text}], value
        if isinstance(value, Sequence) and value and isinstance(value[-1], BaseMessage):
            if not output_text(value).strip():
                return None, value[-1]
            return conversation_of(list(value)), value[-1]
        raise InvalidInputError(
            f"ResponseGuard cannot read a response from {type(value).__name__}: pass an "
            f"AIMessage, a string, a message list or a dict with {self.output_key!r}"
        )

    def _rebuild(self, value: Any, out: Any, verdict: Verdict) -> Any:
        blocked = self.guard.blocks(verdict)
        if blocked and self.on_block == "raise":
            raise UnsafeContentError(verdict)
        if blocked:
            new: Any = self.refusal if isinstance(out, str) else refusal_message(self.refusal, {})
        else:
            new = out
        if isinstance(new, BaseMessage):
            new = with_verdicts(new, {"response": verdict})
        if isinstance(value, Mapping) and self.output_key in value:
            return {**value, self.output_key: new}
        if isinstance(value, Sequence) and not isinstance(value, str):
            return [*list(value)[:-1], new]
        return new

    def _run(
        self, value: Any, run_manager: CallbackManagerForChainRun, config: RunnableConfig
    ) -> Any:
        convo, out = self._plan(value)
        if convo is None:
            return value
        verdict = self.guard.check(convo)
        dispatch_verdict("response", verdict, self.guard.blocks(verdict), config)
        return self._rebuild(value, out, verdict)

    async def _arun(
        self, value: Any, run_manager: AsyncCallbackManagerForChainRun, config: RunnableConfig
    ) -> Any:
        convo, out = self._plan(value)
        if convo is None:
            return value
        verdict = await self.guard.acheck(convo)
        await adispatch_verdict("response", verdict, self.guard.blocks(verdict), config)
        return self._rebuild(value, out, verdict)

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        """Check the response in ``input``; return it annotated (allowed) or the refusal."""
        return self._call_with_config(self._run, input, config, **kwargs)

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        """Async twin of `invoke`."""
        return await self._acall_with_config(self._arun, input, config, **kwargs)
