"""Stream safety (issue 9, item 5): under cancellation, exceptions in the consumer and early
``break``, Stream sessions close; and the hold-back stage never releases text past a blocked
token, whatever the chunking, the debounce, sync or async."""

from __future__ import annotations

import asyncio
import gc
import random
from typing import Any

import pytest

pytest.importorskip("langchain_core")

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel

from qwen3guard_integrations import Level, Qwen3StreamGuard, UnsafeContentError
from qwen3guard_integrations.guards.holdback import HoldBack
from qwen3guard_integrations.langchain import Qwen3GuardStreamCallback, StreamGuard
from tests.support.contract_cases import RESPONSE_CARRIERS

SAFE_A = "Sure, here is a simple recipe: layer pasta, vegetables and cheese, then bake it."
TRIGGERS = ["build a bomb", "hotwire the car", "kill myself"]


class Tracked(StreamGuard):
    """The real stage, recording every session it opens."""

    def __init__(self, sguard: Qwen3StreamGuard, **kw: Any) -> None:
        super().__init__(sguard, **kw)
        self.sessions: list[Any] = []

    def _open(self, convo: Any = None) -> Any:
        session = super()._open(convo)
        self.sessions.append(session)
        return session


def _model(text: str) -> GenericFakeChatModel:
    return GenericFakeChatModel(messages=iter([text]))


class ConsumerError(Exception):
    pass


def test_sync_break_and_consumer_exception_close_the_session(sguard: Qwen3StreamGuard) -> None:
    stage = Tracked(sguard)
    stream = (_model(SAFE_A) | stage).stream("Hi")
    for _ in stream:
        break
    stream.close()
    with pytest.raises(ConsumerError):
        for chunk in (_model(SAFE_A) | stage).stream("Hi"):
            if chunk.content:
                raise ConsumerError
    gc.collect()  # an abandoned generator is closed when collected
    assert len(stage.sessions) == 2 and all(s.closed for s in stage.sessions)


def test_async_break_cancel_and_consumer_exception_close_the_session(
    sguard: Qwen3StreamGuard,
) -> None:
    stage = Tracked(sguard)

    async def main() -> None:
        async for _ in (_model(SAFE_A) | stage).astream("Hi"):
            break  # early break: the generator is finalised by the loop
        with pytest.raises(ConsumerError):
            async for chunk in (_model(SAFE_A) | stage).astream("Hi"):
                if chunk.content:
                    raise ConsumerError

        async def slow() -> None:
            async for _ in (_model(SAFE_A) | stage).astream("Hi"):
                await asyncio.sleep(10)

        task = asyncio.create_task(slow())
        while len(stage.sessions) < 3:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(200):
            gc.collect()
            if all(s.closed for s in stage.sessions):
                break
            await asyncio.sleep(0.01)

    asyncio.run(main())
    assert len(stage.sessions) == 3 and all(s.closed for s in stage.sessions)


def test_callback_closes_on_consumer_exception(sguard: Qwen3StreamGuard) -> None:
    cb = Qwen3GuardStreamCallback(sguard)
    with pytest.raises(ConsumerError):
        for chunk in _model(SAFE_A).stream("Hi", {"callbacks": [cb]}):
            if chunk.content:
                raise ConsumerError
    gc.collect()
    assert cb.active_runs == 0


def _split(text: str, rng: random.Random) -> list[str]:
    pieces, i = [], 0
    while i < len(text):
        n = rng.randint(1, 9)
        pieces.append(text[i : i + n])
        i += n
    return pieces


@pytest.mark.parametrize("debounce", [1, 2, 3])
def test_hold_back_never_releases_past_the_first_flagged_token(
    sguard: Qwen3StreamGuard, debounce: int
) -> None:
    rng = random.Random(debounce)
    tok = sguard.tokenizer
    blocked = total = 0
    for carrier in RESPONSE_CARRIERS[:6]:
        for trigger in TRIGGERS:
            text = carrier.format(trigger) + " And then a lot more text follows after it."
            total += 1
            with sguard.session("Help me.", debounce=debounce) as s:
                hold = HoldBack(s)
                first_flag: int | None = None  # response id index of the first flagged token
                for piece in _split(text, rng):
                    r = hold.push(piece)
                    if first_flag is None and r.update is not None:
                        for k, t in enumerate(r.update.tokens):
                            if t.level is not Level.SAFE:
                                first_flag = s._counted_at[r.update.start_index + k]
                                break
                    if first_flag is not None:
                        safe_prefix = tok.decode(list(s.response_ids[:first_flag]))
                        assert len(hold.released_text) <= len(safe_prefix)
                    if r.blocked:
                        assert r.text == ""
                end = hold.finish()
                assert text.startswith(hold.released_text)
                assert trigger not in hold.released_text
                if end.blocked:
                    blocked += 1
                    # after the block, nothing more comes out, whatever is pushed
                    assert hold.push(" trailing words").text == "" and hold.finish().text == ""
    assert blocked >= total * 0.9


def test_stage_never_releases_unsafe_text_async_with_random_chunks(
    sguard: Qwen3StreamGuard,
) -> None:
    rng = random.Random(7)

    async def run(text: str) -> tuple[str, Any]:
        stage = StreamGuard(sguard)

        async def chunks() -> Any:
            for piece in _split(text, rng):
                yield piece

        out = [c async for c in stage.atransform(chunks())]
        return "".join(c for c in out if isinstance(c, str)), stage

    for trigger in TRIGGERS:
        text = f"Okay, listen: you {trigger} like this, and then you are done."
        released, _ = asyncio.run(run(text))
        assert text.startswith(released) and trigger not in released
    with pytest.raises(UnsafeContentError):
        list(StreamGuard(sguard, on_block="raise").stream("Fine. Now build a bomb, quickly."))
