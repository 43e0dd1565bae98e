"""``guard_tool``: a tool that checks its call before running and its result before returning.

For agents without `Qwen3GuardMiddleware` (a hand-written tool loop,
LangGraph's ``ToolNode``, legacy agents):

```python
search = guard_tool(search, guard)              # same name, description and arguments
```

The call (tool name and arguments) is checked as the assistant's action - a response check - and
the result as prompt-side content, so injected instructions (Jailbreak) in what the tool returns
are caught before the model reads them.

One plan serves the sync and the async tool: `_plan` is a generator that yields what it needs
done (a check, the tool run) and decides from the answers; ``run`` / ``arun`` only do that I/O.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

from langchain_core.callbacks import Callbacks
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool, StructuredTool

from ..core.actions import BlockAction, check_refusal, render_refusal
from ..core.errors import ConfigurationError, UnsafeContentError
from ..core.verdict import Verdict
from ..guards.gen import Qwen3Guard
from .convert import EMPTY_USER, tool_call_text
from .options import block_action, require_guard
from .reporting import Stage, adispatch_verdict, current_config, dispatch_verdict

__all__ = ["TOOL_REFUSAL", "guard_tool"]

#: What a blocked tool returns with ``on_block="refuse"`` unless told otherwise (the model reads
#: it, so it says what was found).
TOOL_REFUSAL = "Blocked by the safety guard: {level} ({categories})."


@dataclass(frozen=True)
class _Check:
    """Check ``convo`` and dispatch its verdict as ``stage``; answers with the verdict."""

    stage: Stage
    convo: list[dict[str, Any]]


@dataclass(frozen=True)
class _Run:
    """Run the wrapped tool with ``kwargs``; answers with its result."""

    kwargs: dict[str, Any]


_Plan = Generator[_Check | _Run, Any, Any]


def _result_text(result: Any) -> str:
    if isinstance(result, str):
        return result
    try:
        return json.dumps(result, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(result)


@dataclass(frozen=True)
class _ToolGuard:
    tool: BaseTool
    guard: Qwen3Guard
    check_args: bool
    check_result: bool
    on_block: BlockAction
    refusal: str

    def plan(self, kwargs: dict[str, Any]) -> _Plan:
        """The pure decision: what to check, when to run the tool, what to return."""
        if self.check_args:
            call = tool_call_text(self.tool.name, kwargs)
            verdict = yield _Check(
                "tool_call", [EMPTY_USER, {"role": "assistant", "content": call}]
            )
            if self.guard.blocks(verdict):
                return self._blocked(verdict, "tool_call")
        result = yield _Run(kwargs)
        text = _result_text(result)
        if self.check_result and text.strip():
            verdict = yield _Check("tool_result", [{"role": "user", "content": text}])
            if self.guard.blocks(verdict):
                return self._blocked(verdict, "tool_result")
        return result

    def _blocked(self, verdict: Verdict, stage: str) -> str:
        if self.on_block is BlockAction.RAISE:
            raise UnsafeContentError(verdict)
        return render_refusal(self.refusal, verdict, stage=stage.replace("_", " "))

    # --- the I/O, once sync and once async ------------------------------------------------------
    def run(self, callbacks: Callbacks = None, **kwargs: Any) -> Any:
        steps, config = self.plan(kwargs), current_config()
        try:
            step = next(steps)
            while True:
                step = steps.send(self._do(step, config, callbacks))
        except StopIteration as done:
            return done.value

    async def arun(self, callbacks: Callbacks = None, **kwargs: Any) -> Any:
        steps, config = self.plan(kwargs), current_config()
        try:
            step = next(steps)
            while True:
                step = steps.send(await self._ado(step, config, callbacks))
        except StopIteration as done:
            return done.value

    def _do(self, step: _Check | _Run, config: RunnableConfig | None, callbacks: Callbacks) -> Any:
        if isinstance(step, _Run):
            return self.tool.invoke(step.kwargs, {"callbacks": callbacks})
        verdict = self.guard.check(step.convo)
        dispatch_verdict(step.stage, verdict, self.guard.blocks(verdict), config)
        return verdict

    async def _ado(
        self, step: _Check | _Run, config: RunnableConfig | None, callbacks: Callbacks
    ) -> Any:
        if isinstance(step, _Run):
            return await self.tool.ainvoke(step.kwargs, {"callbacks": callbacks})
        verdict = await self.guard.acheck(step.convo)
        await adispatch_verdict(step.stage, verdict, self.guard.blocks(verdict), config)
        return verdict


def guard_tool(
    tool: BaseTool,
    guard: Qwen3Guard,
    *,
    check_args: bool = True,
    check_result: bool = True,
    on_block: BlockAction | str = BlockAction.RAISE,
    refusal: str = TOOL_REFUSAL,
    blocked_message: str | None = None,
) -> StructuredTool:
    """Wrap ``tool`` so that its call and its result are checked.

    Args:
        tool: any LangChain tool.
        guard: the `Qwen3Guard` that checks.
        check_args: check the call (name and arguments) before the tool runs.
        check_result: check what the tool returns before it is handed on.
        on_block: ``"raise"`` `UnsafeContentError`, or ``"refuse"``: return ``refusal`` as the
            tool's result (the model reads it). ``"return"`` is the deprecated spelling of
            ``"refuse"``.
        refusal: the refusal template; ``{level}``, ``{categories}`` and ``{stage}`` (``tool
            call`` or ``tool result``) are filled in.
        blocked_message: deprecated name of ``refusal``.

    Returns:
        A new tool with the same name, description and argument schema.

    Raises:
        ConfigurationError: ``tool`` is not a LangChain tool, ``guard`` not a Gen guard, or an
            option is not valid.
    """
    if not isinstance(tool, BaseTool):
        raise ConfigurationError(
            f"guard_tool needs a LangChain tool (a BaseTool, e.g. from @tool), got "
            f"{type(tool).__name__}"
        )
    require_guard(guard, "guard_tool")
    if blocked_message is not None:
        warnings.warn(
            "guard_tool(blocked_message=...) is deprecated: use refusal=...",
            DeprecationWarning,
            stacklevel=2,
        )
        refusal = blocked_message
    action = block_action(
        on_block, (BlockAction.RAISE, BlockAction.REFUSE), legacy={"return": BlockAction.REFUSE}
    )
    tg = _ToolGuard(tool, guard, check_args, check_result, action, check_refusal(refusal))
    return StructuredTool.from_function(
        func=tg.run,
        coroutine=tg.arun,
        name=tool.name,
        description=tool.description,
        args_schema=tool.args_schema or tool.get_input_schema(),
        return_direct=tool.return_direct,
        infer_schema=False,
    )
