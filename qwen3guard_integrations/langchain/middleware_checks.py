"""What `Qwen3GuardMiddleware` checks and what it does with the verdicts: its pure half.

The middleware's hooks are thin: each asks `MiddlewareChecks` for a plan (which messages to
check, as what), makes the one I/O call (``check_batch`` / ``acheck_batch`` and the verdict
events), and hands the verdicts back to `MiddlewareChecks._act`, which returns the state update.
The sync and async hooks differ only in that call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from langchain_core.messages import (
    AIMessage,
    AnyMessage,
    BaseMessage,
    HumanMessage,
    RemoveMessage,
    ToolMessage,
)

from ..core.actions import render_refusal
from ..core.errors import UnsafeContentError
from ..core.verdict import Verdict
from ..guards.gen import CheckItem
from .chat_flow import STAGE_WORDS
from .chat_parts import tool_call_text
from .convert import message_to_dict, text_of_content
from .reporting import Stage, message_verdicts, with_verdicts

if TYPE_CHECKING:
    from ..guards.gen import Qwen3Guard

__all__ = ["BLOCKED_INPUT_PLACEHOLDER", "MiddlewareChecks", "Plan"]

#: What a blocked user message becomes in the agent state (``blocked_input="replace"``).
BLOCKED_INPUT_PLACEHOLDER = "[This message was removed by the safety guard.]"

#: One planned check per entry: its stage, the index of the message it concerns, what to check.
Plan = list[tuple[Stage, int, CheckItem]]


class MiddlewareChecks:
    """The planning and acting of `Qwen3GuardMiddleware` (the options are its own)."""

    guard: Qwen3Guard
    check_input: bool
    check_output: bool
    check_tool_calls: bool
    check_tool_results: bool
    exit_behavior: str
    violation_message: str
    blocked_input: str
    metadata_text: bool
    prompt_check: str

    # --- planning: what to check --------------------------------------------------------------
    def _input_plan(self, messages: Sequence[BaseMessage]) -> Plan:
        plan: Plan = []
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

    def _output_plan(self, messages: Sequence[BaseMessage]) -> Plan:
        plan: Plan = []
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

    def _direct_plan(self, messages: Sequence[BaseMessage]) -> Plan:
        # a run that ends on tool results (return_direct tools) never passes before_model again
        if not messages or not isinstance(messages[-1], ToolMessage):
            return []
        return self._input_plan(messages)

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
        self, messages: Sequence[BaseMessage], plan: Plan, verdicts: list[Verdict]
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
        self, messages: Sequence[BaseMessage], plan: Plan, verdicts: list[Verdict]
    ) -> list[AnyMessage]:
        by_msg: dict[int, dict[str, Verdict]] = {}
        for (stage, idx, _), verdict in zip(plan, verdicts):
            if stage in ("response", "tool_call") and not self.guard.blocks(verdict):
                by_msg.setdefault(idx, {})[stage] = verdict
        return [
            with_verdicts(messages[i], vs, text=self.metadata_text)  # type: ignore[misc]
            for i, vs in by_msg.items()
        ]


def _last_index(messages: Sequence[BaseMessage], cls: type[BaseMessage]) -> int | None:
    for i in range(len(messages) - 1, -1, -1):
        if isinstance(messages[i], cls):
            return i
    return None
