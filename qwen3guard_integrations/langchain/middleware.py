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
from langchain_core.messages import (
    AIMessage,
    AnyMessage,
    BaseMessage,
    HumanMessage,
    RemoveMessage,
    ToolMessage,
)
from langgraph.types import Command

from ..core.actions import check_refusal, render_refusal
from ..core.errors import ConfigurationError, UnsafeContentError
from ..core.verdict import Verdict
from ..guards.gen import CheckItem, Qwen3Guard
from ..guards.stream import Qwen3StreamGuard
from .chat_flow import STAGE_WORDS
from .chat_model import GuardedChatModel, guard_model
from .chat_parts import tool_call_text
from .convert import message_to_dict, text_of_content
from .prompt_check import PROMPT_CHECKS
from .reporting import (
    Stage,
    adispatch_verdict,
    current_config,
    dispatch_verdict,
    message_verdicts,
    with_verdicts,
)

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
#: What a blocked user message becomes in the agent state (``blocked_input="replace"``).
BLOCKED_INPUT_PLACEHOLDER = "[This message was removed by the safety guard.]"


# one planned check: stage, index of the message it concerns, what to check
_Plan = list[tuple[Stage, int, CheckItem]]


class Qwen3GuardMiddleware(AgentMiddleware[AgentState[Any], Any]):
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

    # --- planning: what to check --------------------------------------------------------------
    def _input_plan(self, messages: Sequence[BaseMessage]) -> _Plan:
        plan: _Plan = []
        last_ai = _last_index(messages, AIMessage)
        if self.check_tool_results and last_ai is not None:
            for i in range(last_ai + 1, len(messages)):
                msg = messages[i]
                if isinstance(msg, ToolMessage) and (text := text_of_content(msg.content)).strip():
                    plan.append(("tool_result", i, text))
        if (
            self.check_input
            and self.prompt_check == "before"  # "parallel": inside the guarded model call
            and messages
            and isinstance(messages[-1], HumanMessage)
        ):
            plan.append(("prompt", len(messages) - 1, [message_to_dict(m) for m in messages]))
        return plan

    def _output_plan(self, messages: Sequence[BaseMessage]) -> _Plan:
        plan: _Plan = []
        idx = _last_index(messages, AIMessage)
        # the answer is last, or followed only by the ToolMessages the model node adds for a
        # structured answer (ToolStrategy): its tool calls are still to be checked
        if idx is None or not all(isinstance(m, ToolMessage) for m in messages[idx + 1 :]):
            return plan
        ai = messages[idx]
        assert isinstance(ai, AIMessage)
        done = message_verdicts(ai)  # what the guarded model call checked already
        if any(self.guard.blocks(v) for v in done.values()):
            return plan  # our own notice
        convo = [message_to_dict(m) for m in messages[: idx + 1]]
        if self.check_output and ai.text.strip() and "response" not in done:
            plan.append(("response", idx, convo))
        if (
            self.check_tool_calls
            and (ai.tool_calls or ai.invalid_tool_calls)
            and "tool_call" not in done
        ):
            user = _last_index(messages, HumanMessage)
            context: Any = (
                convo[: user + 1] if user is not None else [{"role": "user", "content": ""}]
            )
            for call in ai.tool_calls:
                plan.append(
                    ("tool_call", idx, (context, tool_call_text(call["name"], call["args"])))
                )
            # calls whose arguments did not parse never run, but their text is in the message
            for bad in ai.invalid_tool_calls:
                text = tool_call_text(bad.get("name") or "unknown", bad.get("args") or "")
                plan.append(("tool_call", idx, (context, text)))
        return plan

    # --- acting on the verdicts ---------------------------------------------------------------
    def _violation_text(self, stage: Stage, verdict: Verdict) -> str:
        return render_refusal(self.violation_message, verdict, stage=STAGE_WORDS[stage])

    def _notice(self, text: str, verdicts: dict[str, Verdict], **fields: Any) -> AIMessage:
        return with_verdicts(AIMessage(content=text, **fields), verdicts, text=self.metadata_text)

    def _scrubbed(self, message: BaseMessage) -> list[Any]:
        """What a blocked user message becomes in the state (``exit_behavior="end"``)."""
        if message.id is None:
            return []
        if self.blocked_input == "remove":
            return [RemoveMessage(id=message.id)]
        return [message.model_copy(update={"content": BLOCKED_INPUT_PLACEHOLDER})]

    def _act(
        self, messages: Sequence[BaseMessage], plan: _Plan, verdicts: list[Verdict]
    ) -> dict[str, Any] | None:
        blocked = [(p, v) for p, v in zip(plan, verdicts) if self.guard.blocks(v)]
        annotate = self._annotations(messages, plan, verdicts)
        if not blocked:
            return {"messages": annotate} if annotate else None
        (stage, idx, _), verdict = blocked[0]
        if self.exit_behavior == "error":
            raise UnsafeContentError(verdict)
        text = self._violation_text(stage, verdict)
        target = messages[idx]
        notice = self._notice(text, {stage: verdict})
        if stage == "prompt":
            if self.exit_behavior == "end":
                return {"jump_to": "end", "messages": [*self._scrubbed(target), notice]}
            return {"messages": [target.model_copy(update={"content": text})]}
        if stage == "tool_result":
            # every flagged result is replaced, so the model (or a later turn) never reads one
            fixed = [
                messages[i].model_copy(update={"content": self._violation_text(s, v)})
                for (s, i, _), v in blocked
            ]
            if self.exit_behavior == "end":
                return {"jump_to": "end", "messages": [*fixed, notice]}
            return {"messages": fixed}
        # response / tool_call: the AI message is replaced (same id) by the notice
        assert isinstance(target, AIMessage)
        all_verdicts: dict[str, Verdict] = {
            s: v for (s, i, _), v in zip(plan, verdicts) if i == idx
        }
        replaced = self._notice(text, all_verdicts, id=target.id, name=target.name)
        update: dict[str, Any] = {"messages": [replaced]}
        if idx < len(messages) - 1:
            # a structured answer the model node already took from the replaced message: drop
            # it and the ToolMessages that answer its calls
            update["messages"] += [RemoveMessage(id=m.id) for m in messages[idx + 1 :] if m.id]
            update["structured_response"] = None
        if self.exit_behavior == "end":
            update["jump_to"] = "end"
        return update

    def _annotations(
        self, messages: Sequence[BaseMessage], plan: _Plan, verdicts: list[Verdict]
    ) -> list[AnyMessage]:
        by_msg: dict[int, dict[str, Verdict]] = {}
        for (stage, idx, _), verdict in zip(plan, verdicts):
            if stage in ("response", "tool_call") and not self.guard.blocks(verdict):
                by_msg.setdefault(idx, {})[stage] = verdict
        return [
            with_verdicts(messages[i], vs, text=self.metadata_text)  # type: ignore[misc]
            for i, vs in by_msg.items()
        ]

    def _run(self, messages: Sequence[BaseMessage], plan: _Plan) -> dict[str, Any] | None:
        if not plan:
            return None
        verdicts = self.guard.check_batch([item for _, _, item in plan])
        config = current_config()
        for (stage, _, _), v in zip(plan, verdicts):
            dispatch_verdict(stage, v, self.guard.blocks(v), config)
        return self._act(messages, plan, verdicts)

    async def _arun(self, messages: Sequence[BaseMessage], plan: _Plan) -> dict[str, Any] | None:
        if not plan:
            return None
        verdicts = await self.guard.acheck_batch([item for _, _, item in plan])
        config = current_config()
        for (stage, _, _), v in zip(plan, verdicts):
            await adispatch_verdict(stage, v, self.guard.blocks(v), config)
        return self._act(messages, plan, verdicts)

    # --- hooks --------------------------------------------------------------------------------
    @hook_config(can_jump_to=["end"])
    def before_model(self, state: AgentState[Any], runtime: Any) -> dict[str, Any] | None:
        """Check new tool results and the user's new input before the model is called."""
        messages = list(state["messages"])
        return self._run(messages, self._input_plan(messages))

    @hook_config(can_jump_to=["end"])
    async def abefore_model(self, state: AgentState[Any], runtime: Any) -> dict[str, Any] | None:
        """Async twin of `before_model`."""
        messages = list(state["messages"])
        return await self._arun(messages, self._input_plan(messages))

    @hook_config(can_jump_to=["end"])
    def after_model(self, state: AgentState[Any], runtime: Any) -> dict[str, Any] | None:
        """Check the model's answer and its tool calls before any tool runs."""
        messages = list(state["messages"])
        return self._run(messages, self._output_plan(messages))

    @hook_config(can_jump_to=["end"])
    async def aafter_model(self, state: AgentState[Any], runtime: Any) -> dict[str, Any] | None:
        """Async twin of `after_model`."""
        messages = list(state["messages"])
        return await self._arun(messages, self._output_plan(messages))

    def _direct_plan(self, messages: Sequence[BaseMessage]) -> _Plan:
        # a run that ends on tool results (return_direct tools) never passes before_model again
        if not messages or not isinstance(messages[-1], ToolMessage):
            return []
        return self._input_plan(messages)

    @staticmethod
    def _at_end(update: dict[str, Any] | None) -> dict[str, Any] | None:
        if update is not None:
            update.pop("jump_to", None)  # the run ends here anyway
        return update

    def after_agent(self, state: AgentState[Any], runtime: Any) -> dict[str, Any] | None:
        """Check the tool results a run ends on (``return_direct`` tools): the user reads them."""
        messages = list(state["messages"])
        return self._at_end(self._run(messages, self._direct_plan(messages)))

    async def aafter_agent(self, state: AgentState[Any], runtime: Any) -> dict[str, Any] | None:
        """Async twin of `after_agent`."""
        messages = list(state["messages"])
        return self._at_end(await self._arun(messages, self._direct_plan(messages)))

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
            if getattr(exc, "stage", None) != "prompt":
                return self._model_violation(exc)
            blocked = self._prompt_blocked(request, exc)
        if isinstance(blocked, ExtendedModelResponse):
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
            if getattr(exc, "stage", None) != "prompt":
                return self._model_violation(exc)
            blocked = self._prompt_blocked(request, exc)
        if isinstance(blocked, ExtendedModelResponse):
            return blocked
        again, fixed = blocked
        try:
            answer: ModelResponse[Any] | AIMessage = await handler(again)
        except UnsafeContentError as exc:
            answer = self._model_violation(exc)
        return _with_update(answer, fixed)

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


def _last_index(messages: Sequence[BaseMessage], cls: type[BaseMessage]) -> int | None:
    for i in range(len(messages) - 1, -1, -1):
        if isinstance(messages[i], cls):
            return i
    return None
