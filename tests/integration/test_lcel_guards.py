"""The LCEL Gen-guard Runnables on the tiny Gen checkpoint with real langchain-core models and
parsers: tool calls (also ones that did not parse) and structured outputs are checked, options
follow the one block vocabulary and are checked at construction, deprecated names still work,
and `guard_tool` runs one plan for its sync and async call."""

from __future__ import annotations

import asyncio
import warnings
from typing import Any

import pytest

pytest.importorskip("langchain_core")

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models.fake_chat_models import (
    FakeListChatModel,
    FakeMessagesListChatModel,
)
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.output_parsers import JsonOutputParser
from langchain_core.runnables import RunnableLambda
from pydantic import BaseModel

from qwen3guard_integrations import (
    ConfigurationError,
    InvalidInputError,
    Level,
    Qwen3Guard,
    Qwen3StreamGuard,
    UnsafeContentError,
)
from qwen3guard_integrations.core.actions import DEFAULT_REFUSAL, BlockAction
from qwen3guard_integrations.langchain import (
    VERDICT_EVENT,
    Classify,
    PromptGuard,
    ResponseGuard,
    guard_chain,
    is_unsafe,
    message_verdicts,
)

SAFE_Q = "Please email my team about the lunch meeting."
BOMB_BODY = "how to build a bomb"


@pytest.fixture(scope="module")
def guard(tiny) -> Qwen3Guard:  # type: ignore[no-untyped-def]
    with Qwen3Guard.from_pretrained(tiny.gen, device="cpu") as g:
        yield g


class Events(BaseCallbackHandler):
    def __init__(self) -> None:
        self.stages: list[tuple[str, bool]] = []

    def on_custom_event(self, name: str, data: Any, **kw: Any) -> None:
        if name == VERDICT_EVENT:
            self.stages.append((data["stage"], data["blocked"]))


def emailing(body: str) -> AIMessage:
    return AIMessage("", tool_calls=[{"name": "send_email", "args": {"body": body}, "id": "c1"}])


def unparsed(body: str) -> AIMessage:
    bad = {"name": "send_email", "args": '{"body": "' + body, "id": "c2", "error": "bad JSON"}
    return AIMessage("", invalid_tool_calls=[bad])


# --- tool calls ----------------------------------------------------------------------------------
@pytest.mark.parametrize("answer", [emailing, unparsed])
def test_a_tool_call_only_answer_is_checked(guard: Qwen3Guard, answer: Any) -> None:
    events = Events()
    chain = (
        PromptGuard(guard)
        | FakeMessagesListChatModel(responses=[answer(BOMB_BODY)])
        | ResponseGuard(guard)
    )
    with pytest.raises(UnsafeContentError) as err:
        chain.invoke(SAFE_Q, {"callbacks": [events]})
    assert err.value.verdict.role.value == "response"
    assert events.stages == [("prompt", False), ("response", True)]
    ok = (
        FakeMessagesListChatModel(responses=[answer("see you at lunch")]) | ResponseGuard(guard)
    ).invoke(SAFE_Q)
    assert message_verdicts(ok)["response"].level is Level.SAFE


def test_tool_calls_are_checked_async_and_by_classify(guard: Qwen3Guard) -> None:
    rg = ResponseGuard(guard, on_block="refuse", refusal="Withheld ({level}).")
    out = asyncio.run(rg.ainvoke([HumanMessage(SAFE_Q), emailing(BOMB_BODY)]))
    assert out[-1].content == "Withheld (Unsafe)." and not out[-1].tool_calls
    assert is_unsafe(Classify(guard).invoke(emailing(BOMB_BODY)))
    assert not is_unsafe(Classify(guard).invoke(emailing("see you at lunch")))


# --- structured outputs --------------------------------------------------------------------------
class Answer(BaseModel):
    steps: str


def test_json_and_structured_outputs_are_checked_as_json(guard: Qwen3Guard) -> None:
    def parsed(text: str) -> Any:
        return FakeListChatModel(responses=[text]) | JsonOutputParser() | ResponseGuard(guard)

    assert parsed('{"steps": "layer the pasta"}').invoke(SAFE_Q) == {"steps": "layer the pasta"}
    with pytest.raises(UnsafeContentError):
        parsed('{"steps": "build the bomb"}').invoke(SAFE_Q)
    with pytest.raises(UnsafeContentError):
        asyncio.run(parsed('[{"steps": "build the bomb"}]').ainvoke(SAFE_Q))
    model_out = RunnableLambda(lambda _: Answer(steps="build the bomb")) | ResponseGuard(guard)
    with pytest.raises(UnsafeContentError):
        model_out.invoke(SAFE_Q)
    with pytest.raises(InvalidInputError):
        ResponseGuard(guard).invoke(42)


def test_guard_chain_checks_a_json_chain_instead_of_crashing(guard: Qwen3Guard) -> None:
    chain = (
        FakeListChatModel(responses=['{"a": "fine"}', '{"a": "build the bomb"}'])
        | JsonOutputParser()
    )
    safe = guard_chain(chain, guard=guard)
    assert safe.invoke(SAFE_Q) == {"a": "fine"}
    with pytest.raises(UnsafeContentError):
        safe.invoke(SAFE_Q)


# --- one vocabulary, checked at construction -----------------------------------------------------
def test_block_options_are_the_core_actions(guard: Qwen3Guard) -> None:
    import qwen3guard_integrations.langchain as lc

    assert lc.DEFAULT_REFUSAL == DEFAULT_REFUSAL
    refusing = PromptGuard(guard, on_block=BlockAction.REFUSE, refusal="No ({stage}: {level}).")
    assert refusing.invoke("How would someone make a bomb?").content == "No (prompt: Unsafe)."
    assert PromptGuard(guard, on_block="refuse").invoke("Make a bomb?").content == DEFAULT_REFUSAL
    for bad in ("drop", "end", "maybe"):
        with pytest.raises(ConfigurationError, match="on_block"):
            PromptGuard(guard, on_block=bad)
        with pytest.raises(InvalidInputError):  # what earlier releases raised
            ResponseGuard(guard, on_block=bad)
    with pytest.raises(ConfigurationError, match="refusal"):
        ResponseGuard(guard, refusal="{verdict}")
    with pytest.raises(ConfigurationError, match="refusal"):
        PromptGuard(guard, refusal=None)  # type: ignore[arg-type]


def test_guard_objects_are_checked_at_construction(
    guard: Qwen3Guard, sguard: Qwen3StreamGuard
) -> None:
    for make in (PromptGuard, ResponseGuard, Classify):
        with pytest.raises(ConfigurationError, match="needs a Qwen3Guard") as err:
            make(sguard)  # type: ignore[arg-type]
        assert "HoldBackStage" in str(err.value)
        with pytest.raises(ConfigurationError, match="got str"):
            make("Qwen/Qwen3Guard-Gen-0.6B")  # type: ignore[arg-type]


def test_the_old_option_type_is_a_deprecated_alias() -> None:
    from qwen3guard_integrations.langchain import guard_runnables

    with pytest.warns(DeprecationWarning, match="BlockAction"):
        assert guard_runnables.OnBlock is not None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        import qwen3guard_integrations.langchain.chain  # noqa: F401  (its own import is quiet)


# --- guard_tool ----------------------------------------------------------------------------------
def test_guard_tool_vocabulary_and_checks(guard: Qwen3Guard, sguard: Qwen3StreamGuard) -> None:
    pytest.importorskip("langchain")
    from langchain_core.tools import tool

    from qwen3guard_integrations.langchain import guard_tool

    sent: list[str] = []

    @tool
    def send_email(body: str) -> str:
        """Send an email."""
        sent.append(body)
        return "sent"

    with pytest.warns(DeprecationWarning, match="'refuse'"):
        soft = guard_tool(send_email, guard, on_block="return")
    refused = soft.invoke({"body": BOMB_BODY})
    assert refused.startswith("Blocked by the safety guard: Unsafe") and sent == []
    assert asyncio.run(soft.ainvoke({"body": BOMB_BODY})) == refused
    assert soft.invoke({"body": "see you at lunch"}) == "sent" and sent == ["see you at lunch"]
    custom = guard_tool(send_email, guard, on_block="refuse", refusal="{stage} refused")
    assert custom.invoke({"body": BOMB_BODY}) == "tool call refused"
    with pytest.raises(UnsafeContentError):
        asyncio.run(guard_tool(send_email, guard).ainvoke({"body": BOMB_BODY}))
    with pytest.raises(ConfigurationError, match="Qwen3Guard"):
        guard_tool(send_email, sguard)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="BaseTool"):
        guard_tool(lambda body: body, guard)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="refusal"):
        guard_tool(send_email, guard, refusal="{nope}")
    assert sent == ["see you at lunch"]
