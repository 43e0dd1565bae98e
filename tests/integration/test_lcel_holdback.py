"""`HoldBackStage` (the LCEL hold-back stage) on the tiny Stream checkpoint with real streaming
chat models: it stops reading the model at the block, passes reasoning and other blocks through
(moderated), releases the model's own text byte for byte and moderates tool calls; `StreamGuard`
is its deprecated alias."""

from __future__ import annotations

import asyncio
import warnings
from typing import Any

import pytest

pytest.importorskip("langchain_core")

from langchain_core.messages import AIMessage, AIMessageChunk

from qwen3guard_integrations import (
    ConfigurationError,
    Level,
    Qwen3Guard,
    Qwen3StreamGuard,
    UnsafeContentError,
)
from qwen3guard_integrations.langchain import (
    VERDICT_EVENT,
    HoldBackStage,
    PromptGuard,
    ResponseGuard,
    message_verdicts,
)
from tests.support.lcel_models import CountingChatModel, ScriptedChatModel

SAFE_Q = "Can you help me?"
SAFE_A = "Sure, here is a simple recipe: layer pasta, vegetables and cheese, then bake."
# the trigger comes early, then a long tail the model should never be asked to generate
LONG_BOMB = "Sure! Here is what you asked for: build the bomb, step by step. " + " ".join(
    ["Then layer the pasta and the cheese and bake it slowly."] * 6
)


@pytest.fixture(scope="module")
def guard(tiny) -> Qwen3Guard:  # type: ignore[no-untyped-def]
    with Qwen3Guard.from_pretrained(tiny.gen, device="cpu") as g:
        yield g


def total_chunks(answer: str) -> int:
    model = CountingChatModel(messages=iter([answer]))
    list(model.stream(SAFE_Q))
    return model.generated[0]


def text_of(chunks: list[Any]) -> str:
    return "".join(c if isinstance(c, str) else c.text for c in chunks)


# --- the block closes the model's stream at once -------------------------------------------------
@pytest.mark.parametrize("on_block", ["refuse", "raise"])
def test_a_block_stops_the_model_at_once(sguard: Qwen3StreamGuard, on_block: str) -> None:
    total = total_chunks(LONG_BOMB)
    model = CountingChatModel(messages=iter([LONG_BOMB]))
    got: list[Any] = []
    try:
        for chunk in (model | HoldBackStage(sguard, on_block=on_block)).stream(SAFE_Q):
            got.append(chunk)
    except UnsafeContentError:
        assert on_block == "raise"
    text = text_of(got)
    assert "bomb" not in text and LONG_BOMB.startswith(text)
    # "bomb" is chunk ~20 of ~130: the model was not read (nor drained by tracing) past the block
    assert total > 100 and model.generated[0] <= LONG_BOMB.split("bomb")[0].count(" ") * 2 + 4


def test_a_block_stops_the_model_at_once_async(sguard: Qwen3StreamGuard) -> None:
    total = total_chunks(LONG_BOMB)

    async def main() -> tuple[str, int, list[dict[str, Any]]]:
        model = CountingChatModel(messages=iter([LONG_BOMB]))
        text, events = "", []
        async for ev in (model | HoldBackStage(sguard)).astream_events(SAFE_Q, version="v2"):
            if ev["event"] == "on_custom_event" and ev["name"] == VERDICT_EVENT:
                events.append(ev["data"])
            elif ev["event"] == "on_chain_stream" and ev["name"] == "HoldBackStage":
                text += ev["data"]["chunk"].text
        return text, model.generated[0], events

    text, generated, events = asyncio.run(main())
    assert "bomb" not in text and LONG_BOMB.startswith(text)
    assert generated < total / 4
    assert [e["blocked"] for e in events] == [True]
    assert events[0]["verdict"].token_index is not None


def test_a_safe_stream_is_read_to_its_end(sguard: Qwen3StreamGuard) -> None:
    model = CountingChatModel(messages=iter([SAFE_A]))
    chunks = list((model | HoldBackStage(sguard)).stream(SAFE_Q))
    assert text_of(chunks) == SAFE_A and model.generated[0] == total_chunks(SAFE_A)
    assert message_verdicts(chunks[-1])["stream"].level is Level.SAFE


def test_the_refusal_ends_a_blocked_stream(sguard: Qwen3StreamGuard) -> None:
    stage = HoldBackStage(sguard, refusal="[withheld: {level}]")
    chunks = list((CountingChatModel(messages=iter([LONG_BOMB])) | stage).stream(SAFE_Q))
    assert chunks[-1].content == "[withheld: Unsafe]"
    assert message_verdicts(chunks[-1])["stream"].level is Level.UNSAFE
    assert "bomb" not in text_of(chunks[:-1])


# --- options and the deprecated name ---------------------------------------------------------------
def test_options_are_checked_at_construction(sguard: Qwen3StreamGuard, guard: Qwen3Guard) -> None:
    with pytest.raises(ConfigurationError, match="on_block"):
        HoldBackStage(sguard, on_block="drop")
    with pytest.raises(ConfigurationError, match="refusal"):
        HoldBackStage(sguard, refusal="{oops}")
    with pytest.raises(ConfigurationError, match=r"Qwen3StreamGuard.*PromptGuard"):
        HoldBackStage(guard)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"Qwen3Guard.*HoldBackStage"):
        PromptGuard(sguard)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="Qwen3Guard"):
        ResponseGuard(object())  # type: ignore[arg-type]
    with pytest.warns(DeprecationWarning, match="'refuse'"):
        assert HoldBackStage(sguard, on_block="end").on_block.value == "refuse"


def test_stream_guard_is_a_deprecated_alias(sguard: Qwen3StreamGuard) -> None:
    import qwen3guard_integrations.langchain as lc

    with pytest.warns(DeprecationWarning, match="HoldBackStage"):
        old = lc.StreamGuard
    assert issubclass(old, HoldBackStage)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the old spelling of its own option does not warn again
        stage = old(sguard, on_block="end")
    chunks = list((CountingChatModel(messages=iter([LONG_BOMB])) | stage).stream(SAFE_Q))
    assert message_verdicts(chunks[-1])["stream"].level is Level.UNSAFE
    assert stage.get_name() == "StreamGuard"


# --- what the model produced, byte for byte, blocks included ---------------------------------------
def test_the_release_is_the_model_text_byte_for_byte(sguard: Qwen3StreamGuard) -> None:
    # combining accent, the Angstrom sign and conjoining jamo: the Qwen3 tokenizer NFC-normalises
    answer = "Cafe\u0301 au lait, \u212b units and \u1100\u1161 letters are all fine here."
    chunks = list(
        (CountingChatModel(messages=iter([answer])) | HoldBackStage(sguard)).stream(SAFE_Q)
    )
    assert text_of(chunks) == answer
    parts = list(HoldBackStage(sguard).stream(answer))
    assert "".join(parts) == answer


def test_reasoning_and_image_blocks_pass_through(sguard: Qwen3StreamGuard) -> None:
    image = {"type": "image", "url": "https://example.com/cake.png", "index": 2}
    model = ScriptedChatModel(
        chunks=[
            AIMessageChunk(
                content=[{"type": "reasoning", "reasoning": "The user wants ", "index": 0}]
            ),
            AIMessageChunk(
                content=[{"type": "reasoning", "reasoning": "a cake recipe.", "index": 0}]
            ),
            AIMessageChunk(content=[{"type": "text", "text": "Here is a cake:", "index": 1}]),
            AIMessageChunk(content=[image]),
            AIMessageChunk(content=[{"type": "text", "text": " bake it well.", "index": 3}]),
        ]
    )
    chunks = list((model | HoldBackStage(sguard)).stream(SAFE_Q))
    merged = chunks[0]
    for c in chunks[1:]:
        merged = merged + c
    blocks = merged.content
    assert [b["type"] for b in blocks] == ["reasoning", "text", "image", "text"]
    assert blocks[0]["reasoning"] == "The user wants a cake recipe."
    assert blocks[2] == image and merged.text == "Here is a cake: bake it well."
    # a reasoning-only stream (also in additional_kwargs) comes out whole, not as ''
    only = ScriptedChatModel(
        chunks=[
            AIMessageChunk(content="", additional_kwargs={"reasoning_content": "Thinking it over."})
        ]
    )
    out = (only | HoldBackStage(sguard)).invoke(SAFE_Q)
    assert out.additional_kwargs["reasoning_content"] == "Thinking it over."


def test_unsafe_reasoning_is_blocked(sguard: Qwen3StreamGuard) -> None:
    model = ScriptedChatModel(
        chunks=[
            AIMessageChunk(content=[{"type": "reasoning", "reasoning": w, "index": 0}])
            for w in [
                "I will ",
                "explain ",
                "how to ",
                "build ",
                "the ",
                "bomb ",
                "now ",
                "in ",
                "detail.",
            ]
        ]
        + [AIMessageChunk(content="Here you go.")]
    )
    chunks = list((model | HoldBackStage(sguard)).stream(SAFE_Q))
    assert message_verdicts(chunks[-1])["stream"].level is Level.UNSAFE
    assert "bomb" not in str([c.content for c in chunks]) and "Here you go" not in text_of(chunks)
    assert model.generated[0] < len(model.chunks)


def test_tool_calls_are_moderated_before_release(sguard: Qwen3StreamGuard) -> None:
    def calling(body: str) -> ScriptedChatModel:
        return ScriptedChatModel(
            chunks=[
                AIMessageChunk(content="Sending it now."),
                AIMessageChunk(
                    content="",
                    tool_call_chunks=[
                        {"name": "send_email", "args": '{"body": "' + body, "id": "c1", "index": 0}
                    ],
                ),
                AIMessageChunk(
                    content="",
                    tool_call_chunks=[{"name": None, "args": '"}', "id": None, "index": 0}],
                ),
            ]
        )

    ok = (calling("see you at the lunch meeting") | HoldBackStage(sguard)).invoke(SAFE_Q)
    assert ok.tool_calls[0]["args"] == {"body": "see you at the lunch meeting"}
    chunks = list((calling("how to build a bomb") | HoldBackStage(sguard)).stream(SAFE_Q))
    assert message_verdicts(chunks[-1])["stream"].level is Level.UNSAFE
    assert all(not c.tool_call_chunks and not c.tool_calls for c in chunks)
    with pytest.raises(UnsafeContentError):
        asyncio.run(
            (calling("how to build a bomb") | HoldBackStage(sguard, on_block="raise")).ainvoke(
                SAFE_Q
            )
        )


def test_invoke_of_a_message_keeps_its_parts(sguard: Qwen3StreamGuard) -> None:
    msg = AIMessage(SAFE_A, id="m1", response_metadata={"model_name": "x"})
    out = HoldBackStage(sguard).invoke(msg)
    assert out.content == SAFE_A and out.id == "m1" and out.response_metadata["model_name"] == "x"


def test_a_consumer_that_stops_early_stops_the_model(sguard: Qwen3StreamGuard) -> None:
    safe_long = " ".join([SAFE_A] * 6)
    total = total_chunks(safe_long)
    model = CountingChatModel(messages=iter([safe_long]))
    stream = (model | HoldBackStage(sguard)).stream(SAFE_Q)
    next(stream)
    stream.close()  # langchain-core would drain the model's stream into its trace here
    assert model.generated[0] < total / 4

    async def main() -> int:
        amodel = CountingChatModel(messages=iter([safe_long]))
        astream = (amodel | HoldBackStage(sguard)).astream(SAFE_Q)
        await anext(astream)
        await astream.aclose()
        return amodel.generated[0]

    assert asyncio.run(main()) < total / 4
