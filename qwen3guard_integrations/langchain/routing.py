"""Routing on verdicts: `Classify` and predicates for ``RunnableBranch`` conditions.

```python
router = Classify(guard) | RunnableBranch(
    (is_unsafe, refuse),
    (has_category("Politically Sensitive Topics"), careful_chain),
    main_chain,  # the default branch
)
```

`Classify` returns ``{"input": <its input>, "verdict": Verdict}``; each predicate takes that
dict, a `Verdict`, or a message carrying verdicts in ``response_metadata["qwen3guard"]``
(the most severe of them), and returns a bool.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForChainRun, CallbackManagerForChainRun
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables import Runnable, RunnableConfig

from ..core.errors import InvalidInputError
from ..core.labels import Category, Level
from ..core.policy import Policy
from ..core.verdict import Verdict
from ..guards.gen import Qwen3Guard
from .convert import EMPTY_USER, conversation_of, response_text
from .options import require_guard
from .reporting import adispatch_verdict, dispatch_verdict, message_verdicts

__all__ = [
    "Classify",
    "has_category",
    "is_blocked_by",
    "is_controversial",
    "is_safe",
    "is_unsafe",
    "verdict_of",
]


class Classify(Runnable[Any, dict[str, Any]]):
    """Checks its input and returns ``{"input": input, "verdict": verdict}``; never blocks.

    The input is a string (a prompt), a message list or ``PromptValue`` (the mode follows the last
    message: user -> prompt check, assistant -> response check), a lone ``AIMessage`` (a response
    without context: its reasoning, text and tool calls), or a dict holding one of those under
    ``key`` (default ``"input"``).

    Raises:
        ConfigurationError: ``guard`` is not a Gen guard.
    """

    def __init__(self, guard: Qwen3Guard, *, key: str = "input", name: str | None = None) -> None:
        require_guard(guard, "Classify")
        self.guard = guard
        self.key = key
        self.name = name or "Classify"

    def _conversation(self, value: Any) -> list[dict[str, Any]]:
        if isinstance(value, Mapping) and not ("role" in value and "content" in value):
            if self.key not in value:
                raise InvalidInputError(f"the input dict has no {self.key!r} key to classify")
            value = value[self.key]
        if isinstance(value, AIMessage):
            return [EMPTY_USER, {"role": "assistant", "content": response_text(value)}]
        return conversation_of(value)

    def _run(
        self, value: Any, run_manager: CallbackManagerForChainRun, config: RunnableConfig
    ) -> dict[str, Any]:
        verdict = self.guard.check(self._conversation(value))
        dispatch_verdict(verdict.role.value, verdict, self.guard.blocks(verdict), config)
        return {"input": value, "verdict": verdict}

    async def _arun(
        self, value: Any, run_manager: AsyncCallbackManagerForChainRun, config: RunnableConfig
    ) -> dict[str, Any]:
        verdict = await self.guard.acheck(self._conversation(value))
        await adispatch_verdict(verdict.role.value, verdict, self.guard.blocks(verdict), config)
        return {"input": value, "verdict": verdict}

    def invoke(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """Return ``{"input": input, "verdict": verdict}``."""
        return self._call_with_config(self._run, input, config, **kwargs)

    async def ainvoke(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """Async twin of `invoke`."""
        return await self._acall_with_config(self._arun, input, config, **kwargs)


def verdict_of(value: Any) -> Verdict:
    """The verdict a predicate looks at: a `Verdict`, ``value["verdict"]`` (the output of
    `Classify`), or the most severe verdict attached to a message."""
    if isinstance(value, Verdict):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("verdict"), Verdict):
        return value["verdict"]
    if isinstance(value, BaseMessage):
        found = list(message_verdicts(value).values())
        if found:
            return max(found, key=lambda v: v.level.severity)
        raise InvalidInputError("the message carries no qwen3guard verdict")
    raise InvalidInputError(
        f"no verdict in {type(value).__name__}: route on the output of Classify, a Verdict or "
        "a message a guard annotated"
    )


def is_safe(value: Any) -> bool:
    """True when the verdict is Safe."""
    return verdict_of(value).level is Level.SAFE


def is_unsafe(value: Any) -> bool:
    """True when the verdict is Unsafe."""
    return verdict_of(value).level is Level.UNSAFE


def is_controversial(value: Any) -> bool:
    """True when the verdict is Controversial."""
    return verdict_of(value).level is Level.CONTROVERSIAL


def has_category(name: str | Category) -> Callable[[Any], bool]:
    """A predicate: True when the verdict names category ``name`` (an exact category name)."""
    try:
        cat = name if isinstance(name, Category) else Category.parse(name)
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from None

    def predicate(value: Any) -> bool:
        return cat in verdict_of(value).categories

    predicate.__name__ = f"has_category_{cat.name.lower()}"
    return predicate


def is_blocked_by(policy: Policy | Qwen3Guard) -> Callable[[Any], bool]:
    """A predicate: True when ``policy`` (or a guard's policy) blocks the verdict."""
    pol = policy.policy if isinstance(policy, Qwen3Guard) else policy

    def predicate(value: Any) -> bool:
        return pol.blocks(verdict_of(value))

    predicate.__name__ = "is_blocked"
    return predicate
