"""Stream sessions on the tiny Stream checkpoint: real cached forward passes, no mocked outputs."""

from __future__ import annotations

import asyncio
import random
import re
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import pytest

from qwen3guard_integrations import (
    InvalidInputError,
    Level,
    Policy,
    Qwen3StreamGuard,
    Role,
    SessionClosedError,
)
from qwen3guard_integrations.core.labels import Category
from qwen3guard_integrations.testing.contract import expected_prompt, expected_stream_levels
from tests.support.contract_cases import (
    RESPONSE_CARRIERS,
    RESPONSE_PHRASES,
    SAFE_RESPONSES,
    assert_rules,
    prompt_cases,
)
from tests.support.official import token_pieces

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def guard(tiny) -> Qwen3StreamGuard:  # type: ignore[no-untyped-def]
    return Qwen3StreamGuard.from_pretrained(tiny.stream, device="cpu")


def response_cases() -> list[tuple[str, str]]:
    cases = [(p, c.format(p)) for p in RESPONSE_PHRASES for c in RESPONSE_CARRIERS]
    return cases + [("safe", s) for s in SAFE_RESPONSES]


# the reference full forward goes through Qwen3GuardStreamModel.forward (no cache given: no
# deprecated keyword reaches the backbone)
@pytest.mark.filterwarnings("error:`past_key_values` is deprecated:FutureWarning")
def test_incremental_logits_equal_full_forward(guard: Qwen3StreamGuard) -> None:
    tok = guard.tokenizer
    text = "Sure! Here is what you asked for: build the bomb, step by step. 好的，答案是。"
    with guard.session("Can you help me?") as s:
        prefix = list(s.prompt_ids)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            full = guard.model(torch.tensor([prefix + ids]))
        # the runner, one id at a time on a fresh cache, against the single full forward
        cache = guard.runner.new_cache()
        steps = [guard.runner.forward(prefix, cache)]
        steps += [guard.runner.forward([t], cache) for t in ids]
        names = ("risk_level_logits", "category_logits")
        names += ("query_risk_level_logits", "query_category_logits")
        for k, name in enumerate(names):
            inc = torch.cat([step[k] for step in steps])
            assert torch.allclose(inc, getattr(full, name)[0], atol=1e-4, rtol=0)
        # and the session's per-token probabilities, fed one id at a time
        scores = [s.feed([t]).tokens[0].scores for t in ids]
    probs = torch.softmax(full.risk_level_logits[0, len(prefix) :], dim=-1)
    labels = guard.loaded.labels.risk
    got = torch.tensor([[sc[lv] for lv in labels] for sc in scores])
    assert torch.allclose(got, probs, atol=1e-4, rtol=0)


@pytest.mark.slow
def test_prompt_verdict_follows_the_contract(guard: Qwen3StreamGuard) -> None:
    results: dict[str, list[bool]] = defaultdict(list)
    for rule, convo in prompt_cases():
        with guard.session(convo) as s:
            v = s.prompt_verdict
        exp = expected_prompt(convo[-1]["content"])
        assert v.role is Role.PROMPT and v.scores is not None
        assert abs(sum(v.scores.values()) - 1) < 1e-5
        assert max(v.scores, key=v.scores.__getitem__) is v.level
        results[rule].append(v.level is exp.level and v.categories == exp.categories)
    assert_rules(results)


def _check_stream(guard: Qwen3StreamGuard, feed_mode: str) -> None:
    tok = guard.tokenizer
    rng = random.Random(7)
    tokens: dict[str, list[bool]] = defaultdict(list)
    decisions: dict[str, list[bool]] = defaultdict(list)
    for rule, text in response_cases():
        ids = tok(text, add_special_tokens=False)["input_ids"]
        expected = expected_stream_levels(token_pieces(tok, ids))
        got = []
        with guard.session("Can you help me?") as s:
            if feed_mode == "ids":
                for t in ids:
                    got += s.feed([t]).tokens
            else:  # text pieces split at random characters, as another tokenizer would
                i = 0
                while i < len(text):
                    n = rng.randint(1, 6)
                    got += s.feed(text[i : i + n]).tokens
                    i += n
                got += s.finish().tokens
            verdict = s.verdict
        assert [g.token_id for g in got] == ids  # the re-tokenized ids are exactly Qwen3's
        for (lv, cat), g in zip(expected, got):
            tokens[rule].append(g.level is lv and (cat is None or g.category is cat))
        decisions[rule].append((verdict is not None) == (rule != "safe"))
    assert_rules(tokens)
    assert_rules(decisions)


@pytest.mark.slow
def test_response_tokens_follow_the_contract_with_ids(guard: Qwen3StreamGuard) -> None:
    _check_stream(guard, "ids")


@pytest.mark.slow
def test_response_tokens_follow_the_contract_with_text_pieces(guard: Qwen3StreamGuard) -> None:
    _check_stream(guard, "text")


CLEAR = [
    ("Sure! Here is what you asked for: build the bomb, step by step.", "bomb", Level.UNSAFE),
    ("Of course. First you hotwire the engine and then you clean up.", "hotwire", Level.UNSAFE),
    ("Here you go: insult them. Let me know if you need more.", "insult", Level.CONTROVERSIAL),
]


@pytest.mark.parametrize(("text", "trigger", "level"), CLEAR)
def test_debounced_decision_on_clear_cases(
    guard: Qwen3StreamGuard, text: str, trigger: str, level: Level
) -> None:
    tok = guard.tokenizer
    ids = tok(text, add_special_tokens=False)["input_ids"]
    pieces = token_pieces(tok, ids)
    first = next(i for i, (lv, _) in enumerate(expected_stream_levels(pieces)) if lv is level)
    with guard.session("Can you help me?", debounce=2, policy=Policy.loose()) as s:
        updates = [s.feed(t) for t in ids]
    trips = [i for i, u in enumerate(updates) if u.tripped]
    assert trips == [first + 1]  # two consecutive non-Safe tokens: the one after the trigger
    v = updates[-1].verdict
    assert v is not None and v.level is level and v.role is Role.RESPONSE
    assert v.token_index == first + 1
    assert v.text_until == "".join(pieces[: first + 2]) and trigger in v.text_until.lower()
    assert updates[-1].blocked is (level is Level.UNSAFE)  # loose: Controversial passes
    assert all(not u.blocked for u in updates[: first + 1])
    # debounce=3 trips one token later; strict blocks Controversial too
    with guard.session("Can you help me?", debounce=3, policy=Policy.strict()) as s:
        updates = [s.feed(t) for t in ids]
    assert [i for i, u in enumerate(updates) if u.tripped] == [first + 2]
    assert updates[-1].blocked


def test_safe_response_never_trips(guard: Qwen3StreamGuard) -> None:
    with guard.session("Hi") as s:
        u = s.feed("The capital of Australia is Canberra.")
        u2 = s.finish()
        assert u2.decision is Level.SAFE and u2.verdict is None and not u2.blocked
        assert len(u.tokens) + len(u2.tokens) == len(
            guard.tokenizer("The capital of Australia is Canberra.")["input_ids"]
        )


def test_close_frees_the_cache(guard: Qwen3StreamGuard) -> None:
    s = guard.session("Hi")
    s.feed("Hello there, friend.")
    assert s.cached_tokens == len(s.prompt_ids) + len(s.response_ids)
    s.close()
    assert s.closed and s.cache is None and s.cached_tokens == 0
    with pytest.raises(SessionClosedError):
        s.feed([1])
    with pytest.raises(SessionClosedError):
        s.finish()
    with guard.session("Hi") as s2:
        pass
    assert s2.closed and s2.cache is None


def test_bad_input_is_a_typed_error(guard: Qwen3StreamGuard) -> None:
    for bad in ([], "", "   ", [{"role": "assistant", "content": "x"}]):
        with pytest.raises(InvalidInputError):
            guard.session(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        guard.session([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}])
    with guard.session("Hi") as s:
        vocab = guard.loaded.config.vocab_size
        for piece in ([vocab], [-1], [1.5], [True], b"x", 3.0, None, {"a": 1}, "\ud800"):
            with pytest.raises(InvalidInputError):
                s.feed(piece)  # type: ignore[arg-type]
        s.feed("Hello wor")
        with pytest.raises(InvalidInputError, match="finish"):
            s.feed([10])  # ids while text is held back
        s.finish()
        s.feed([10, 11])
    with pytest.raises(ValueError):
        guard.session("Hi", debounce=0)


def _run_one(guard: Qwen3StreamGuard, text: str) -> tuple[Level, list[Level], int | None]:
    with guard.session("Can you help me?") as s:
        levels = []
        for i in range(0, len(text), 5):
            levels += s.feed(text[i : i + 5]).levels
        levels += s.finish().levels
        return s.prompt_verdict.level, levels, None if s.verdict is None else s.verdict.token_index


TEXTS = [c.format(p) for p, c in zip(RESPONSE_PHRASES * 2, RESPONSE_CARRIERS)] + list(
    SAFE_RESPONSES[:4]
)


@pytest.mark.slow
def test_concurrent_threads_match_sequential(guard: Qwen3StreamGuard) -> None:
    sequential = [_run_one(guard, t) for t in TEXTS]
    with ThreadPoolExecutor(max_workers=4) as pool:
        threaded = list(pool.map(lambda t: _run_one(guard, t), TEXTS))
    assert threaded == sequential


@pytest.mark.slow
async def test_concurrent_asyncio_matches_sequential(guard: Qwen3StreamGuard) -> None:
    sequential = [_run_one(guard, t) for t in TEXTS]

    async def one(text: str) -> tuple[Level, list[Level], int | None]:
        async with guard.asession("Can you help me?") as s:
            levels = []
            for i in range(0, len(text), 5):
                levels += (await s.afeed(text[i : i + 5])).levels
            levels += (await s.afinish()).levels
            v = s.verdict
            return s.prompt_verdict.level, levels, None if v is None else v.token_index

    assert await asyncio.gather(*(one(t) for t in TEXTS)) == sequential


def test_compat_pair_returns_the_official_shape(guard: Qwen3StreamGuard) -> None:
    tok = guard.tokenizer
    convo = [{"role": "user", "content": "How do I make a bomb?"}]
    ids = tok.apply_chat_template(
        convo, add_generation_prompt=True, enable_thinking=False, return_dict=False
    )
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    at = max(i for i, t in enumerate(ids) if t == im_end)
    result, state = guard.stream_moderate_from_ids(torch.tensor(ids[: at + 1]), role="user")
    assert set(result) == {"risk_level", "risk_prob", "category", "category_prob"}
    assert all(len(v) == at + 1 for v in result.values())
    assert result["risk_level"][-1] == "Unsafe" and result["category"][-1] == "Violent"
    assert all(re.fullmatch(r"\d\.\d{1,2}|\d", str(p)) for p in result["risk_prob"])
    answer = tok("Sure, build the bomb like this.", add_special_tokens=False)["input_ids"]
    levels = []
    for t in answer:
        result, state = guard.stream_moderate_from_ids([t], role="assistant", stream_state=state)
        assert all(len(v) == 1 for v in result.values())
        levels.append(result["risk_level"][-1])
        assert result["risk_level"][-1] in {"Safe", "Unsafe", "Controversial"}
        assert result["category"][-1] in {c.value for c in Category}
    assert levels[-1] == "Unsafe" and levels[0] == "Safe"
    assert state.length == at + 1 + len(answer)
    guard.close_stream(state)
    assert state.cache is None
    with pytest.raises(SessionClosedError):
        guard.stream_moderate_from_ids([1], role="assistant", stream_state=state)
    with pytest.raises(InvalidInputError):
        guard.stream_moderate_from_ids([1], role="system")  # type: ignore[arg-type]


def test_think_content_moderated_or_skipped(guard: Qwen3StreamGuard) -> None:
    text = (
        "<think>\nbuild the bomb, they said, build the bomb\n</think>\n\nThe capital is Canberra."
    )
    with guard.session("Hi", think="skip") as s:
        u = [s.feed(text[i : i + 4]) for i in range(0, len(text), 4)] + [s.finish()]
        counted = [t for x in u for t in x.tokens]
        assert guard.tokenizer.decode([t.token_id for t in counted]) == "The capital is Canberra."
        assert s.decision is Level.SAFE
    with guard.session("Hi", think="moderate") as s:
        for i in range(0, len(text), 4):
            s.feed(text[i : i + 4])
        s.finish()
        assert s.decision is Level.UNSAFE and s.verdict is not None
        assert s.verdict.text_until is not None and s.verdict.text_until.startswith("<think>")
    # scaffolding: an empty think block and control tokens are never counted
    tok = guard.tokenizer
    empty = tok("<think>\n\n</think>\n\nOk.", add_special_tokens=False)["input_ids"]
    with guard.session("Hi") as s:
        u = s.feed([*empty, tok.convert_tokens_to_ids("<|im_end|>")])
        assert tok.decode([t.token_id for t in u.tokens]) == "Ok."
