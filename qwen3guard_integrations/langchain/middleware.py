"""``Qwen3GuardMiddleware``: Qwen3Guard for ``langchain.agents.create_agent``.

```python
agent = create_agent(model, tools, middleware=[Qwen3GuardMiddleware(guard)])
```

Checks, each switchable: the user's input before the model (prompt check, when the last message is
the user's), the model's answer after it (response check in the conversation's context), every
tool call the model asks for - its name and arguments, as the assistant's action in the context
of the user's request - after the model and before any tool runs, and tool results before they go
back to the model (as prompt-side content, so injected instructions and Jailbreak are caught;
the results of ``return_direct`` tools, which end the run, before the run ends).
The model call itself goes through `guard_model` (``wrap_model_call``): its answer and tool
calls are checked before they are released, so no channel (``stream_mode="messages"``,
``astream_events``, callbacks) carries unchecked tokens or tool-call arguments. With a
``stream_guard`` the answer streams as the Stream head clears it; without one it is released
whole once Gen cleared it. ``after_model`` then only checks what the model call did not.

On a block, ``exit_behavior``: ``"end"`` stops the run with a violation message (an unsafe answer
or tool call is replaced by it, so it never reaches the user or a tool; an injected tool result is
replaced so no later turn reads it; a blocked user message is replaced in the agent state by a
placeholder, ``blocked_input="replace"``, or removed, ``"remove"``, so a thread kept by a
checkpointer recovers instead of judging every later turn with it); ``"error"`` raises
`UnsafeContentError`; ``"replace"`` swaps the flagged message's
content for the violation message and lets the run go on (an answer or tool call is replaced by
the notice, without tool calls, so no tool runs; a flagged tool result is replaced and the model
reads the notice instead). Verdicts are dispatched as
`VERDICT_EVENT` custom events and attached to the AI messages' metadata.

``prompt_check="parallel"`` moves the check of the user's new turn from ``before_model`` into the
guarded model call (`guard_model(prompt_check="parallel")`): the inner model starts with the
check, nothing it says is released before the verdict, and a blocked prompt stops it at once.
The block then ends as in ``"before"`` mode: the same ``exit_behavior`` and, with ``"end"``, the
same ``blocked_input`` scrubbing of the user's turn from the agent state (applied with the model
node's update, through `ExtendedModelResponse`); ``"replace"`` calls the model again on the
notice. Tool results are still checked in ``before_model``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal

from langchain.agents.middleware.types import (
    AgentMiddleware,
    AgentState,
    ExtendedModelResponse,
    ModelRequest,
    ModelResponse,
    hook_config,
)
from langchain_core.messages import AIMessage, BaseMessage
from langgraph.types import Command

from ..core.actions import check_refusal
from ..core.errors import ConfigurationError, UnsafeContentError
from ..core.verdict import Verdict
from ..guards.gen import Qwen3Guard
from ..guards.stream import Qwen3StreamGuard
from .chat_model import GuardedChatModel, guard_model
from .chat_parts import tool_call_text
from .middleware_checks import BLOCKED_INPUT_PLACEHOLDER, MiddlewareChecks, Plan
from .prompt_check import PROMPT_CHECKS
from .reporting import Stage, adispatch_verdict, current_config, dispatch_verdict

__all__ = [
    "BLOCKED_INPUT_PLACEHOLDER",
    "DEFAULT_VIOLATION",
    "BlockedInput",
    "ExitBehavior",
    "PromptCheck",
    "Qwen3GuardMiddleware",
    "tool_call_text",
]

ExitBehavior = Literal["end", "error", "replace"]
#: Where the user's new turn is checked: ``"before"`` the model call or in ``"parallel"`` with it.
PromptCheck = Literal["before", "parallel"]
#: What ``exit_behavior="end"`` does with a blocked user message in the agent state.
BlockedInput = Literal["replace", "remove"]

#: The violation message; ``{stage}``, ``{level}`` and ``{categories}`` are filled in.
DEFAULT_VIOLATION = "Sorry, I can't continue: the {stage} was flagged as {level} ({categories})."


class Qwen3GuardMiddleware(MiddlewareChecks, AgentMiddleware[AgentState[Any], Any]):
    """Agent middleware; see the module docstring.

    Args:
        guard: the Gen `Qwen3Guard` (its policy decides).
        stream_guard: optional `Qwen3StreamGuard`: the model's answer streams as the Stream
            head clears it (through `guard_model`) and stops at a trip.
        check_input, check_output, check_tool_calls, check_tool_results: what to check.
        exit_behavior: ``"end"`` (default), ``"error"`` or ``"replace"``.
        violation_message: the text put in place of blocked content (see
            `DEFAULT_VIOLATION`).
        blocked_input: with ``"end"``: ``"replace"`` (default) a blocked user message in the
            agent state by `BLOCKED_INPUT_PLACEHOLDER`, or ``"remove"`` it.
        reasoning: ``"moderate"`` (default) or ``"skip"`` the model's reasoning blocks.
        metadata_text: keep the flagged text (``text_until``) in message metadata.
        prompt_check: ``"before"`` (default): check the user's new turn in ``before_model``;
            ``"parallel"``: check it inside the guarded model call, with the inner model
            started meanwhile (see docs/latency.md).
    """

    def __init__(
        self,
        guard: Qwen3Guard,
        *,
        stream_guard: Qwen3StreamGuard | None = None,
        check_input: bool = True,
        check_output: bool = True,
        check_tool_calls: bool = True,
        check_tool_results: bool = True,
        exit_behavior: ExitBehavior = "end",
        violation_message: str = DEFAULT_VIOLATION,
        blocked_input: BlockedInput = "replace",
        reasoning: Literal["moderate", "skip"] = "moderate",
        metadata_text: bool = False,
        prompt_check: PromptCheck = "before",
    ) -> None:
        super().__init__()
        if not isinstance(guard, Qwen3Guard):
            raise ConfigurationError(
                f"Qwen3GuardMiddleware needs a Qwen3Guard (Gen) as guard, got "
                f"{type(guard).__name__}"
                + (": pass it as stream_guard" if isinstance(guard, Qwen3StreamGuard) else "")
            )
        if stream_guard is not None and not isinstance(stream_guard, Qwen3StreamGuard):
            raise ConfigurationError(
                f"stream_guard must be a Qwen3StreamGuard, got {type(stream_guard).__name__}"
            )
        if exit_behavior not in ("end", "error", "replace"):
            raise ConfigurationError(
                f"exit_behavior must be 'end', 'error' or 'replace', got {exit_behavior!r}"
            )
        if blocked_input not in ("replace", "remove"):
            raise ConfigurationError(
                f"blocked_input must be 'replace' or 'remove', got {blocked_input!r}"
            )
        if prompt_check not in PROMPT_CHECKS:
            raise ConfigurationError(
                f"prompt_check must be 'before' or 'parallel', got {prompt_check!r}"
            )
        if reasoning not in ("moderate", "skip"):
            raise ConfigurationError(f"reasoning must be 'moderate' or 'skip', got {reasoning!r}")
        self.violation_message = check_refusal(violation_message, option="violation_message")
        self.blocked_input = blocked_input
        self.reasoning = reasoning
        self.metadata_text = metadata_text
        self.guard = guard
        self.stream_guard = stream_guard
        self.check_input = check_input
        self.check_output = check_output
        self.check_tool_calls = check_tool_calls
        self.check_tool_results = check_tool_results
        self.exit_behavior = exit_behavior
        self.prompt_check = prompt_check

    # plan (`MiddlewareChecks`), one I/O call (the checks and their events), act
    def _run(self, messages: Sequence[BaseMessage], plan: Plan) -> dict[str, Any] | None:
        if not plan:
            return None
        verdicts = self.guard.check_batch([item for _, _, item in plan])
        for stage, verdict, blocked, config in self._events(plan, verdicts):
            dispatch_verdict(stage, verdict, blocked, config)
        return self._act(messages, plan, verdicts)

    async def _arun(self, messages: Sequence[BaseMessage], plan: Plan) -> dict[str, Any] | None:
        if not plan:
            return None
        verdicts = await self.guard.acheck_batch([item for _, _, item in plan])
        for stage, verdict, blocked, config in self._events(plan, verdicts):
            await adispatch_verdict(stage, verdict, blocked, config)
        return self._act(messages, plan, verdicts)

    def _events(
        self, plan: Plan, verdicts: list[Verdict]
    ) -> list[tuple[Stage, Verdict, bool, Any]]:
        config = current_config()
        return [
            (stage, v, self.guard.blocks(v), config) for (stage, _, _), v in zip(plan, verdicts)
        ]

    @staticmethod
    def _planned(
        state: AgentState[Any], plan: Callable[[Sequence[BaseMessage]], Plan]
    ) -> tuple[list[BaseMessage], Plan]:
        messages = list(state["messages"])
        return messages, plan(messages)

    # --- hooks --------------------------------------------------------------------------------
    @hook_config(can_jump_to=["end"])
    def before_model(self, state: AgentState[Any], runtime: Any) -> dict[str, Any] | None:
        """Check new tool results and the user's new input before the model is called."""
        return self._run(*self._planned(state, self._input_plan))

    @hook_config(can_jump_to=["end"])
    async def abefore_model(self, state: AgentState[Any], runtime: Any) -> dict[str, Any] | None:
        """Async twin of `before_model`."""
        return await self._arun(*self._planned(state, self._input_plan))

    @hook_config(can_jump_to=["end"])
    def after_model(self, state: AgentState[Any], runtime: Any) -> dict[str, Any] | None:
        """Check the model's answer and its tool calls before any tool runs."""
        return self._run(*self._planned(state, self._output_plan))

    @hook_config(can_jump_to=["end"])
    async def aafter_model(self, state: AgentState[Any], runtime: Any) -> dict[str, Any] | None:
        """Async twin of `after_model`."""
        return await self._arun(*self._planned(state, self._output_plan))

    @staticmethod
    def _at_end(update: dict[str, Any] | None) -> dict[str, Any] | None:
        if update is not None:
            update.pop("jump_to", None)  # the run ends here anyway
        return update

    def after_agent(self, state: AgentState[Any], runtime: Any) -> dict[str, Any] | None:
        """Check the tool results a run ends on (``return_direct`` tools): the user reads them."""
        return self._at_end(self._run(*self._planned(state, self._direct_plan)))

    async def aafter_agent(self, state: AgentState[Any], runtime: Any) -> dict[str, Any] | None:
        """Async twin of `after_agent`."""
        return self._at_end(await self._arun(*self._planned(state, self._direct_plan)))

    def _guarded(self, model: Any) -> GuardedChatModel:
        """The request's model behind `guard_model` (``"before"``: the prompt was checked)."""
        if isinstance(model, GuardedChatModel):
            return model
        return guard_model(
            model,
            guard=self.guard,
            stream_guard=self.stream_guard,
            check_prompt=self.check_input and self.prompt_check == "parallel",
            prompt_check=self.prompt_check,
            check_response=self.check_output,
            check_tool_calls=self.check_tool_calls,
            reasoning=self.reasoning,
            metadata_text=self.metadata_text,
        )

    def wrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], ModelResponse[Any]],
    ) -> ModelResponse[Any] | AIMessage | ExtendedModelResponse[Any]:
        """Run the model through `guard_model`: nothing it says is released unchecked."""
        try:
            return handler(request.override(model=self._guarded(request.model)))
        except UnsafeContentError as exc:
            blocked = self._blocked(request, exc)
        if not isinstance(blocked, tuple):
            return blocked
        again, fixed = blocked  # "replace": the model answers the notice instead
        try:
            answer: ModelResponse[Any] | AIMessage = handler(again)
        except UnsafeContentError as exc:
            answer = self._model_violation(exc)
        return _with_update(answer, fixed)

    async def awrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], Awaitable[ModelResponse[Any]]],
    ) -> ModelResponse[Any] | AIMessage | ExtendedModelResponse[Any]:
        """Async twin of `wrap_model_call`."""
        try:
            return await handler(request.override(model=self._guarded(request.model)))
        except UnsafeContentError as exc:
            blocked = self._blocked(request, exc)
        if not isinstance(blocked, tuple):
            return blocked
        again, fixed = blocked
        try:
            answer: ModelResponse[Any] | AIMessage = await handler(again)
        except UnsafeContentError as exc:
            answer = self._model_violation(exc)
        return _with_update(answer, fixed)

    def _blocked(
        self, request: ModelRequest[Any], exc: UnsafeContentError
    ) -> AIMessage | ExtendedModelResponse[Any] | tuple[ModelRequest[Any], list[Any]]:
        """What a block inside the model call becomes: a notice, or for a prompt blocked
        there (``"parallel"``) `_prompt_blocked`'s answer."""
        if getattr(exc, "stage", None) != "prompt":
            return self._model_violation(exc)
        return self._prompt_blocked(request, exc)

    def _model_violation(self, exc: UnsafeContentError) -> AIMessage:
        if self.exit_behavior == "error":
            raise exc
        stage: Stage = getattr(exc, "stage", "response")
        return self._notice(self._violation_text(stage, exc.verdict), {stage: exc.verdict})

    def _prompt_blocked(
        self, request: ModelRequest[Any], exc: UnsafeContentError
    ) -> ExtendedModelResponse[Any] | tuple[ModelRequest[Any], list[Any]]:
        """A prompt blocked inside the model call (``"parallel"``), ended as `before_model`
        ends it: ``"end"``: the notice, and the user's turn scrubbed from the state;
        ``"replace"``: the request again with the notice in place of the user's turn (and the
        state update that makes the same swap)."""
        if self.exit_behavior == "error":
            raise exc
        target = request.messages[-1]
        text = self._violation_text("prompt", exc.verdict)
        if self.exit_behavior == "end":
            notice = self._notice(text, {"prompt": exc.verdict})
            scrub: Command[Any] = Command(update={"messages": self._scrubbed(target)})
            return ExtendedModelResponse(ModelResponse(result=[notice]), command=scrub)
        fixed = target.model_copy(update={"content": text})
        again = request.override(
            model=self._guarded(request.model), messages=[*request.messages[:-1], fixed]
        )
        return again, [fixed]


def _with_update(
    answer: ModelResponse[Any] | AIMessage, messages: list[Any]
) -> ExtendedModelResponse[Any]:
    response = answer if isinstance(answer, ModelResponse) else ModelResponse(result=[answer])
    return ExtendedModelResponse(response, command=Command(update={"messages": messages}))
