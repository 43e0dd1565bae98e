"""Verdicts as LlamaIndex instrumentation events, so existing event handlers see them.

Every check made by `Qwen3GuardNodePostprocessor` and
`GuardedQueryEngine` is sent as a `Qwen3GuardVerdictEvent` through the
dispatcher named ``"qwen3guard_integrations.llama_index"`` (`DISPATCHER_NAME`). It propagates
to the root dispatcher, so a handler added with
``llama_index.core.instrumentation.get_dispatcher().add_event_handler(handler)`` receives it,
with the ``span_id`` of the query that was running.

LlamaIndex event handlers swallow their own exceptions, so a handler cannot stop anything: blocking
is done by the postprocessor and the query engine; events only report.
"""

from __future__ import annotations

from typing import Any, Literal

from llama_index.core.instrumentation import Dispatcher, get_dispatcher
from llama_index.core.instrumentation.events import BaseEvent

from ..core.verdict import Verdict

__all__ = [
    "DISPATCHER_NAME",
    "Qwen3GuardVerdictEvent",
    "Stage",
    "aemit",
    "aemit_verdict",
    "dispatcher",
    "emit",
    "emit_verdict",
]

#: The name of the dispatcher the verdict events go through.
DISPATCHER_NAME = "qwen3guard_integrations.llama_index"

#: What was checked: the query, a retrieved node, the whole answer, or the streamed answer.
Stage = Literal["query", "node", "response", "stream"]

#: The dispatcher the verdict events go through (it propagates to the root dispatcher).
dispatcher: Dispatcher = get_dispatcher(DISPATCHER_NAME)


class Qwen3GuardVerdictEvent(BaseEvent):
    """One Qwen3Guard verdict, sent through LlamaIndex instrumentation.

    Attributes:
        verdict: the verdict (``verdict.to_dict()`` gives it JSON-ready).
        stage: ``"query"``, ``"node"``, ``"response"`` or ``"stream"``.
        blocked: whether the guard's policy blocks the verdict.
        action: what was done: ``"allow"``, ``"raise"``, ``"refuse"``, ``"empty"`` (an unsafe
            query answered with no nodes), ``"drop"`` or ``"flag"`` (a node).
        node_id: the node's id for ``stage="node"``, else None.
    """

    verdict: Verdict
    stage: Stage
    blocked: bool
    action: str
    node_id: str | None = None

    @classmethod
    def class_name(cls) -> str:
        """The event's class name, as LlamaIndex reports it."""
        return "Qwen3GuardVerdictEvent"


def emit(event: BaseEvent, **kwargs: Any) -> None:
    """Send ``event`` through `dispatcher` to every handler (their errors are swallowed)."""
    dispatcher.event(event, **kwargs)


async def aemit(event: BaseEvent, **kwargs: Any) -> None:
    """Async twin of `emit`: handlers' ``ahandle`` run concurrently."""
    await dispatcher.aevent(event, **kwargs)


def emit_verdict(
    verdict: Verdict,
    stage: Stage,
    *,
    blocked: bool,
    action: str,
    node_id: str | None = None,
    **kwargs: Any,
) -> Qwen3GuardVerdictEvent:
    """Send a `Qwen3GuardVerdictEvent` to every handler; return the event."""
    event = Qwen3GuardVerdictEvent(
        verdict=verdict, stage=stage, blocked=blocked, action=action, node_id=node_id
    )
    emit(event, **kwargs)
    return event


async def aemit_verdict(
    verdict: Verdict,
    stage: Stage,
    *,
    blocked: bool,
    action: str,
    node_id: str | None = None,
    **kwargs: Any,
) -> Qwen3GuardVerdictEvent:
    """Async twin of `emit_verdict` (handlers' ``ahandle`` run concurrently)."""
    event = Qwen3GuardVerdictEvent(
        verdict=verdict, stage=stage, blocked=blocked, action=action, node_id=node_id
    )
    await aemit(event, **kwargs)
    return event
