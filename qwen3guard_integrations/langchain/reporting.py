"""How verdicts reach the caller: message metadata and LangChain custom events.

Every guard Runnable dispatches one custom event named `VERDICT_EVENT` per check, visible
in ``astream_events`` (``event == "on_custom_event"``) and to any callback handler's
``on_custom_event``. Its data is ``{"stage": ..., "verdict": Verdict, "blocked": bool,
"token_index": int | None}`` (``token_index``: where a stream was flagged). The event keeps the
whole verdict, flagged text (``text_until``) included, for audit logs.

Messages carry their verdicts under ``response_metadata["qwen3guard"]``: a dict from stage
(``"prompt"``, ``"response"``, ``"stream"``) to the verdict as a JSON-ready dict (so messages stay
serialisable in checkpoints); `message_verdicts` reads them back as `Verdict`. That metadata
travels with the message to every consumer (a chat UI receives it), so the guarded chat model,
the middleware and `guard_chain` attach it without ``text_until`` (the flagged text) unless
asked to keep it (`with_verdicts` ``text=True``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, TypeVar

from langchain_core.callbacks.manager import adispatch_custom_event, dispatch_custom_event
from langchain_core.messages import BaseMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import ensure_config, get_callback_manager_for_config

from ..core.verdict import Verdict

__all__ = [
    "METADATA_KEY",
    "VERDICT_EVENT",
    "Stage",
    "adispatch_verdict",
    "current_config",
    "dispatch_verdict",
    "message_verdicts",
    "verdict_event",
    "verdict_metadata",
    "with_verdicts",
]

#: Key of the verdicts in ``AIMessage.response_metadata``.
METADATA_KEY = "qwen3guard"
#: Name of the custom callback event that carries a verdict.
VERDICT_EVENT = "qwen3guard_verdict"

Stage = Literal["prompt", "response", "stream", "tool_call", "tool_result"]

M = TypeVar("M", bound=BaseMessage)


def verdict_event(stage: Stage, verdict: Verdict, blocked: bool) -> dict[str, Any]:
    """The data of a `VERDICT_EVENT`."""
    return {
        "stage": stage,
        "verdict": verdict,
        "blocked": blocked,
        "token_index": verdict.token_index,
    }


def current_config() -> RunnableConfig | None:
    """The config of the run this code executes in (LangChain's context), or None outside one."""
    config = ensure_config()
    if not config.get("callbacks"):
        return None
    if get_callback_manager_for_config(config).parent_run_id is None:
        return None
    return config


def dispatch_verdict(
    stage: Stage, verdict: Verdict, blocked: bool, config: RunnableConfig | None
) -> None:
    """Dispatch a `VERDICT_EVENT` to the handlers of the run ``config`` belongs to (a
    no-op outside a run)."""
    if config is None or not config.get("callbacks"):
        return
    dispatch_custom_event(VERDICT_EVENT, verdict_event(stage, verdict, blocked), config=config)


async def adispatch_verdict(
    stage: Stage, verdict: Verdict, blocked: bool, config: RunnableConfig | None
) -> None:
    """Async twin of `dispatch_verdict`."""
    if config is None or not config.get("callbacks"):
        return
    await adispatch_custom_event(
        VERDICT_EVENT, verdict_event(stage, verdict, blocked), config=config
    )


def verdict_metadata(verdict: Verdict, *, text: bool = True) -> dict[str, Any]:
    """``verdict`` as the JSON-ready dict messages carry (without ``text_until``, the flagged
    text, unless ``text``)."""
    data = verdict.to_dict()
    if not text:
        data["text_until"] = None
    return data


def with_verdicts(message: M, verdicts: Mapping[str, Verdict], *, text: bool = True) -> M:
    """A copy of ``message`` whose ``response_metadata["qwen3guard"]`` also holds ``verdicts``
    (stage -> verdict); the input message is not changed. ``text=False`` leaves the flagged
    text out (see `verdict_metadata`)."""
    meta = dict(message.response_metadata or {})
    ours = dict(meta.get(METADATA_KEY) or {})
    ours.update({stage: verdict_metadata(v, text=text) for stage, v in verdicts.items()})
    meta[METADATA_KEY] = ours
    return message.model_copy(update={"response_metadata": meta})


def message_verdicts(message: BaseMessage) -> dict[str, Verdict]:
    """The verdicts a guard attached to ``message`` (stage -> `Verdict`); empty if none."""
    raw = (getattr(message, "response_metadata", None) or {}).get(METADATA_KEY) or {}
    return {
        stage: v if isinstance(v, Verdict) else Verdict.from_dict(v) for stage, v in raw.items()
    }
