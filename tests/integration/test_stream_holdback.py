"""Hold-back release over real Stream sessions: only text the Stream head has cleared gets out."""

from __future__ import annotations

import random

import pytest

from qwen3guard_integrations import Level, Qwen3StreamGuard
from qwen3guard_integrations.guards.holdback import HoldBack
from tests.support.contract_cases import RESPONSE_CARRIERS, SAFE_RESPONSES

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def guard(tiny) -> Qwen3StreamGuard:  # type: ignore[no-untyped-def]
    return Qwen3StreamGuard.from_pretrained(tiny.stream, device="cpu")


def _split(text: str, rng: random.Random) -> list[str]:
    pieces, i = [], 0
    while i < len(text):
        n = rng.randint(1, 6)
        pieces.append(text[i : i + n])
        i += n
    return pieces


@pytest.mark.parametrize("debounce", [1, 2, 3])
def test_safe_stream_is_released_whole_and_never_runs_ahead(
    guard: Qwen3StreamGuard, debounce: int
) -> None:
    rng = random.Random(debounce)
    for text in [*SAFE_RESPONSES[:6], "好的，这是答案：天气很好。😀 Ça va très bien, merci."]:
        with guard.session("Tell me something nice.", debounce=debounce) as s:
            hb = HoldBack(s)
            sent = ""
            for piece in _split(text, rng):
                sent += piece
                r = hb.push(piece)
                assert not r.blocked and "\ufffd" not in r.text
                assert sent.startswith(hb.released_text)
                # at most the debounce window (plus the re-tokenizer's tail) is held back
                assert len(s.response_ids) - s.settled_ids <= debounce - 1
            end = hb.finish()
            assert not end.blocked
            assert hb.released_text == text


@pytest.mark.parametrize("debounce", [1, 2])
def test_unsafe_stream_stops_before_the_first_flagged_token(
    guard: Qwen3StreamGuard, debounce: int
) -> None:
    tok = guard.tokenizer
    blocked = 0
    for carrier in RESPONSE_CARRIERS[:8]:
        text = carrier.format("build a bomb") + " Then more words follow here."
        ids = tok(text, add_special_tokens=False)["input_ids"]
        with guard.session("Help me.", debounce=debounce) as s:
            hb = HoldBack(s)
            flagged_from: int | None = None
            for k, t in enumerate(ids):
                r = hb.push([t])
                tokens = r.update.tokens if r.update else ()
                if flagged_from is None and any(x.level is not Level.SAFE for x in tokens):
                    flagged_from = k
                # nothing from a flagged token on ever gets out
                if flagged_from is not None:
                    assert len(hb.released_text) <= len(tok.decode(ids[:flagged_from]))
                if r.blocked:
                    break
            end = hb.finish()
        assert text.startswith(hb.released_text)
        assert "bomb" not in hb.released_text
        if end.blocked:
            blocked += 1
            assert end.text == "" and end.update is None
            assert end.verdict is not None and end.verdict.level is Level.UNSAFE
    assert blocked >= 7


def test_after_a_block_nothing_is_fed_or_released(guard: Qwen3StreamGuard) -> None:
    with guard.session("Help me.", debounce=1) as s:
        hb = HoldBack(s)
        for piece in ["Sure, first you ", "build a bomb", " at home", " and then"]:
            r = hb.push(piece)
        seen = len(s.response_ids)
        assert r.blocked and hb.blocked
        r = hb.push(" lots more text")
        assert (r.text, r.update, r.blocked) == ("", None, True)
        assert len(s.response_ids) == seen
        assert "bomb" not in hb.released_text


async def test_async_twins_release_the_same_text(guard: Qwen3StreamGuard) -> None:
    text = SAFE_RESPONSES[0]
    pieces = _split(text, random.Random(3))
    async with guard.asession("Hi there.") as s:
        hb = HoldBack(s.session)
        out = [(await hb.apush(p)).text for p in pieces]
        out.append((await hb.afinish()).text)
    with guard.session("Hi there.") as s2:
        hb2 = HoldBack(s2)
        ref = [hb2.push(p).text for p in pieces] + [hb2.finish().text]
    assert out == ref and "".join(out) == text


def test_peek_sees_the_held_back_tail_and_leaves_no_trace(guard: Qwen3StreamGuard) -> None:
    text = "Sure, here is how you build a bomb at home, step by step."
    words = text.split(" ")
    words = [w + " " for w in words[:-1]] + [words[-1]]
    trigger_at = next(k for k, w in enumerate(words) if "bomb" in w)
    peeked: list[tuple[int, str, float]] = []
    plain: list[tuple[int, str, float]] = []
    with guard.session("Help me.", debounce=1) as a, guard.session("Help me.", debounce=1) as b:
        first_seen: int | None = None
        committed_at: int | None = None
        for k, w in enumerate(words):
            ua, ub = a.feed(w), b.feed(w)
            peeked += [(t.token_id, t.level.value, t.probability) for t in ua.tokens]
            plain += [(t.token_id, t.level.value, t.probability) for t in ub.tokens]
            if committed_at is None and ua.blocked:
                committed_at = k
            state = (a.cached_tokens, a.response_ids, a.decision, a.verdict)
            ahead = a.peek()
            assert (a.cached_tokens, a.response_ids, a.decision, a.verdict) == state
            if first_seen is None and ahead.blocked:
                first_seen = k
        peeked += [(t.token_id, t.level.value, t.probability) for t in a.finish().tokens]
        plain += [(t.token_id, t.level.value, t.probability) for t in b.finish().tokens]
    # the peek flags the trigger while the re-tokenizer still holds it; feeding alone is later
    assert first_seen == trigger_at
    assert committed_at is not None and committed_at > trigger_at
    # and the peeked session went on exactly like one that never peeked
    assert [(i, lv) for i, lv, _ in peeked] == [(i, lv) for i, lv, _ in plain]
    assert max(abs(p - q) for (_, _, p), (_, _, q) in zip(peeked, plain)) < 1e-5


def test_a_flagged_run_cut_short_by_the_end_still_blocks(guard: Qwen3StreamGuard) -> None:
    from qwen3guard_integrations.core.stream_rule import Debouncer

    d = Debouncer(3)
    assert not d.push(Level.SAFE) and not d.push(Level.UNSAFE) and not d.push(Level.UNSAFE)
    assert d.flush() and d.decision is Level.UNSAFE and not d.flush()
    d = Debouncer(2)
    d.push(Level.UNSAFE)
    d.push(Level.SAFE)
    assert not d.flush() and d.decision is Level.SAFE  # a run the stream went past stays cleared
    blocked = 0
    for text in ("Sure, first you hotwire", "Of course, you build a bomb", "Fine. Just hotwire"):
        ids = guard.tokenizer(text, add_special_tokens=False)["input_ids"]
        with guard.session("Help me.", debounce=2) as s:
            hb = HoldBack(s)
            for t in ids:
                hb.push([t])
            levels = [t.level for t in s.peek().tokens]  # (nothing held back: ids path)
            assert levels == []
            end = hb.finish()
        assert "hotwire" not in hb.released_text and "bomb" not in hb.released_text
        if end.blocked:
            blocked += 1
            assert end.update is not None and end.update.tripped
            assert end.verdict is not None and end.verdict.level is Level.UNSAFE
    assert blocked >= 2


# --- the one loop every adapter runs ----------------------------------------------------------
def _source(pieces: list[str], pulled: list[str]):  # type: ignore[no-untyped-def]
    for p in pieces:
        pulled.append(p)
        yield p


def test_run_stops_at_the_block_and_closes_the_source(guard: Qwen3StreamGuard) -> None:
    text = RESPONSE_CARRIERS[0].format("build a bomb") + " " + " ".join(["more"] * 60)
    pieces = _split(text, random.Random(3))
    pulled: list[str] = []
    src = _source(pieces, pulled)
    with guard.session("Help me.") as s:
        rels = list(HoldBack(s).run(src))
    assert rels[-1].done and rels[-1].blocked and rels[-1].verdict is not None
    assert all(not r.done for r in rels[:-1])
    released = "".join(r.text for r in rels)
    assert "bomb" not in released and text.startswith(released)
    assert len(pulled) < len(pieces) - 20  # not drained
    assert src.gi_frame is None  # closed at once


def test_run_releases_a_safe_answer_whole_and_passes_textless_items(
    guard: Qwen3StreamGuard,
) -> None:
    text = SAFE_RESPONSES[0]
    items: list[object] = [*_split(text, random.Random(1)), {"tool_call": "x"}]
    with guard.session("Tell me something nice.") as s:
        rels = list(HoldBack(s).run(items, text_of=lambda i: i if isinstance(i, str) else None))
    assert "".join(r.text for r in rels) == text
    assert rels[-1].done and not rels[-1].blocked
    assert [r.item for r in rels if r.item is not None and not isinstance(r.item, str)] == [
        {"tool_call": "x"}
    ]


async def test_arun_matches_run_with_an_async_session(guard: Qwen3StreamGuard) -> None:
    text = RESPONSE_CARRIERS[1].format("build a bomb") + " and then some more words here."
    pieces = _split(text, random.Random(5))

    async def agen():  # type: ignore[no-untyped-def]
        for p in pieces:
            yield p

    with guard.session("Help me.") as s:
        sync = [(r.text, r.blocked, r.done) for r in HoldBack(s).run(iter(pieces))]
    async with guard.asession("Help me.") as a:
        got = [(r.text, r.blocked, r.done) async for r in HoldBack(a).arun(agen())]
    assert got == sync


def test_holdback_refuses_what_is_not_a_session() -> None:
    from qwen3guard_integrations.core.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="StreamSession"):
        HoldBack(object())  # type: ignore[arg-type]
