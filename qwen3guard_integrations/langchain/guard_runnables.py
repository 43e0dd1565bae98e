"""Pass-through guard Runnables: `PromptGuard` before a model, `ResponseGuard` after.

Both pass their input on unchanged when the guard's policy allows it, dispatch a
`VERDICT_EVENT` custom event with the verdict, and on a block raise `UnsafeContentError`
(``on_block="raise"``, the default) or answer with the refusal (``on_block="refuse"``; see
`qwen3guard_integrations.core.actions` for the vocabulary and the refusal template). What they
check is everything the model said: its text, its reasoning blocks, its tool calls (arguments as
JSON, calls that did not parse included) and structured outputs (a dict, a list or a pydantic
model, as their JSON serialisation). ``invoke`` / ``ainvoke`` / ``batch`` / ``abatch`` /
``stream`` / ``astream`` all work; async calls go through the guard's micro-batcher, so
``abatch`` runs as batched forwards.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForChainRun, CallbackManagerForChainRun
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables import Runnable, RunnableConfig

from ..core.actions import DEFAULT_REFUSAL, BlockAction, check_refusal, render_refusal
from ..core.errors import InvalidInputError, UnsafeContentError
from ..core.verdict import Verdict
from ..guards.gen import Qwen3Guard
from .convert import EMPTY_USER, conversation_of, prompt_of, response_text
from .options import block_action, deprecated_names, require_guard
from .reporting import adispatch_verdict, dispatch_verdict, with_verdicts

__all__ = ["DEFAULT_REFUSAL", "PromptGuard", "ResponseGuard", "refusal_message"]

#: The actions the pass-through guards take on a block.
_ACTIONS = (BlockAction.RAISE, BlockAction.REFUSE)

if TYPE_CHECKING:  # the deprecated option type (see __getattr__)
    OnBlock = Literal["raise", "refuse"]

__getattr__ = deprecated_names(
    __name__,
    {"OnBlock": ("qwen3guard_integrations.core.actions.BlockAction", lambda: _ON_BLOCK)},
)
_ON_BLOCK = Literal["raise", "refuse"]


def refusal_message(text: str, verdicts: dict[str, Verdict]) -> AIMessage:
    """An ``AIMessage`` refusal carrying the verdicts that caused it in its metadata."""
    return with_verdicts(AIMessage(content=text), verdicts)


class _Guarded(Runnable[Any, Any]):
    """What both pass-through guards share: the options, checked once, and the block action."""

    stage: Literal["prompt", "response"]

    def __init__(
        self,
        guard: Qwen3Guard,
        on_block: BlockAction | str,
        refusal: str,
        name: str | None,
    ) -> None:
        require_guard(guard, type(self).__name__)
        self.guard = guard
        self.on_block = block_action(on_block, _ACTIONS)
        self.refusal = check_refusal(refusal)
        self.name = name or type(self).__name__

    def _refusal_text(self, verdict: Verdict) -> str:
        """The refusal for ``verdict``, or the typed error when the action is to raise."""
        if self.on_block is BlockAction.RAISE:
            raise UnsafeContentError(verdict)
        return render_refusal(self.refusal, verdict, stage=self.stage)


class PromptGuard(_Guarded):
    """Checks the prompt and passes the input on unchanged when it is allowed.

    Accepts a string, a message, a message list (or ``(role, text)`` tuples), a ``PromptValue``,
    or a dict holding one of those under ``key`` (default ``"input"``). Assistant turns in the
    history are checked with their tool calls.

    Args:
        guard: the `Qwen3Guard` that checks.
        key: the dict key holding the prompt.
        on_block: ``"raise"`` `UnsafeContentError`, or ``"refuse"``: return an
            ``AIMessage`` with ``refusal`` (its ``response_metadata["qwen3guard"]["prompt"]`` holds
            the verdict) instead of the input.
        refusal: the refusal template (``{level}``, ``{categories}``, ``{stage}`` are filled in).
        name: the run name (default ``"PromptGuard"``).

    Raises:
        ConfigurationError: ``guard`` is not a Gen guard, or an option is not valid.
    """

    stage = "prompt"

    def __init__(
        self,
        guard: Qwen3Guard,
        *,
        key: str = "input",
        on_block: BlockAction | str = BlockAction.RAISE,
        refusal: str = DEFAULT_REFUSAL,
        name: str | None = None,
    ) -> None:
        super().__init__(guard, on_block, refusal, name)
        self.key = key

    def _settle(self, value: Any, verdict: Verdict) -> Any:
        if not self.guard.blocks(verdict):
            return value
        return refusal_message(self._refusal_text(verdict), {"prompt": verdict})

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


class ResponseGuard(_Guarded):
    """Checks a model's output, in the context of its prompt when the input holds it.

    Input forms: an ``AIMessage`` (or chunk) or a string (checked without context); a dict
    ``{input_key: prompt, output_key: output}``; a message list ending with the assistant's
    message; any other dict, list or pydantic model (a parser's or ``with_structured_output``'s
    result), checked as its JSON serialisation. A message's tool calls are checked with its text
    (an answer with only tool calls is checked too). The output is returned with the verdict in
    ``response_metadata["qwen3guard"]["response"]`` (messages only; other outputs pass
    unchanged, their verdict is in the custom event).

    When streamed (after a model in ``model | ResponseGuard(guard)``), it gathers the chunks and
    releases the checked response as one chunk at the end: a Gen verdict needs the whole answer,
    and nothing unchecked is released. For token-level streaming use `HoldBackStage`.

    Args:
        guard: the `Qwen3Guard` that checks.
        input_key, output_key: the dict keys of the prompt and the output.
        on_block: ``"raise"`` `UnsafeContentError`, or ``"refuse"``: put a refusal
            (an ``AIMessage``, or the text for a string output) in place of the output.
        refusal: the refusal template.
        name: the run name (default ``"ResponseGuard"``).

    Raises:
        ConfigurationError: ``guard`` is not a Gen guard, or an option is not valid.
    """

    stage = "response"

    def __init__(
        self,
        guard: Qwen3Guard,
        *,
        input_key: str = "input",
        output_key: str = "output",
        on_block: BlockAction | str = BlockAction.RAISE,
        refusal: str = DEFAULT_REFUSAL,
        name: str | None = None,
    ) -> None:
        super().__init__(guard, on_block, refusal, name)
        self.input_key = input_key
        self.output_key = output_key

    # the conversation to check, and the output to rebuild from the (annotated) response
    def _plan(self, value: Any) -> tuple[list[dict[str, Any]] | None, Any]:
        if isinstance(value, Mapping) and self.output_key in value:
            out = value[self.output_key]
            before: Any = [EMPTY_USER]
            if self.input_key in value:
                before = prompt_of(value[self.input_key], key=None)
                before = (
                    [{"role": "user", "content": before}] if isinstance(before, str) else before
                )
            return _with_answer(before, response_text(out)), out
        if (
            isinstance(value, Sequence)
            and not isinstance(value, str)
            and value
            and isinstance(value[-1], BaseMessage)
        ):
            text = response_text(value[-1])
            return _with_answer(conversation_of(list(value[:-1])) or [EMPTY_USER], text), value[-1]
        try:
            text = response_text(value)
        except InvalidInputError:
            raise InvalidInputError(
                f"ResponseGuard cannot read a response from {type(value).__name__}: pass an "
                f"AIMessage, a string, a message list, a JSON-like output or a dict with "
                f"{self.output_key!r}"
            ) from None
        return _with_answer([EMPTY_USER], text), value

    def _rebuild(self, value: Any, out: Any, verdict: Verdict) -> Any:
        new: Any = out
        if self.guard.blocks(verdict):
            text = self._refusal_text(verdict)
            new = text if isinstance(out, str) else refusal_message(text, {})
        if isinstance(new, BaseMessage):
            new = with_verdicts(new, {"response": verdict})
        if isinstance(value, Mapping) and self.output_key in value:
            return {**value, self.output_key: new}
        if out is not value:  # a message list: the last message replaced
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


def _with_answer(before: list[dict[str, Any]], text: str) -> list[dict[str, Any]] | None:
    """``before`` and the assistant's ``text``; None when there is nothing to moderate."""
    if not text.strip():
        return None
    return [*before, {"role": "assistant", "content": text}]
