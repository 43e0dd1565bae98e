"""``guard_tool``: a tool that checks its call before running and its result before returning.

For agents without `Qwen3GuardMiddleware` (a hand-written tool loop,
LangGraph's ``ToolNode``, legacy agents):

```python
search = guard_tool(search, guard)              # same name, description and arguments
```

The call (tool name and arguments) is checked as the assistant's action - a response check - and
the result as prompt-side content, so injected instructions (Jailbreak) in what the tool returns
are caught before the model reads them.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from langchain_core.callbacks import Callbacks
from langchain_core.tools import BaseTool, StructuredTool

from ..core.errors import InvalidInputError, UnsafeContentError
from ..core.verdict import Verdict
from ..guards.gen import Qwen3Guard
from .convert import EMPTY_USER
from .middleware import tool_call_text
from .reporting import adispatch_verdict, current_config, dispatch_verdict

__all__ = ["guard_tool"]


def _result_text(result: Any) -> str:
    if isinstance(result, str):
        return result
    try:
        return json.dumps(result, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(result)


def guard_tool(
    tool: BaseTool,
    guard: Qwen3Guard,
    *,
    check_args: bool = True,
    check_result: bool = True,
    on_block: Literal["raise", "return"] = "raise",
    blocked_message: str = "Blocked by the safety guard: {level} ({categories}).",
) -> StructuredTool:
    """Wrap ``tool`` so that its call and its result are checked.

    Args:
        tool: any LangChain tool.
        guard: the `Qwen3Guard` that checks.
        check_args: check the call (name and arguments) before the tool runs.
        check_result: check what the tool returns before it is handed on.
        on_block: ``"raise"`` `UnsafeContentError`, or
            ``"return"`` ``blocked_message`` as the tool's result (the model reads it).
        blocked_message: the text returned on a block; ``{level}`` and ``{categories}`` are
            filled in.

    Returns:
        A new tool with the same name, description and argument schema.
    """
    if on_block not in ("raise", "return"):
        raise InvalidInputError(f"on_block must be 'raise' or 'return', got {on_block!r}")

    def blocked(verdict: Verdict) -> str:
        if on_block == "raise":
            raise UnsafeContentError(verdict)
        cats = ", ".join(c.value for c in verdict.categories) or "no category"
        return blocked_message.format(level=verdict.level.value, categories=cats)

    def run(callbacks: Callbacks = None, **kwargs: Any) -> Any:
        config = current_config()
        if check_args:
            v = guard.check_response([EMPTY_USER], tool_call_text(tool.name, kwargs))
            dispatch_verdict("tool_call", v, guard.blocks(v), config)
            if guard.blocks(v):
                return blocked(v)
        result = tool.invoke(kwargs, {"callbacks": callbacks})
        text = _result_text(result)
        if check_result and text.strip():
            v = guard.check_prompt(text)
            dispatch_verdict("tool_result", v, guard.blocks(v), config)
            if guard.blocks(v):
                return blocked(v)
        return result

    async def arun(callbacks: Callbacks = None, **kwargs: Any) -> Any:
        config = current_config()
        if check_args:
            v = await guard.acheck_response([EMPTY_USER], tool_call_text(tool.name, kwargs))
            await adispatch_verdict("tool_call", v, guard.blocks(v), config)
            if guard.blocks(v):
                return blocked(v)
        result = await tool.ainvoke(kwargs, {"callbacks": callbacks})
        text = _result_text(result)
        if check_result and text.strip():
            v = await guard.acheck_prompt(text)
            await adispatch_verdict("tool_result", v, guard.blocks(v), config)
            if guard.blocks(v):
                return blocked(v)
        return result

    return StructuredTool.from_function(
        func=run,
        coroutine=arun,
        name=tool.name,
        description=tool.description,
        args_schema=tool.args_schema or tool.get_input_schema(),
        return_direct=tool.return_direct,
        infer_schema=False,
    )
