"""The tiny checkpoints follow the behaviour contract on fresh sentences (real forward passes).

Each rule is checked on at least 20 sentences in English and other languages, through the
official call paths. Each rule must hold on at least 90% of its cases (the computed weights hold
all of them; tests/integration/test_fixture_accuracy.py asserts 99% on fresh sentences).
"""

from __future__ import annotations

import itertools
from collections import defaultdict

import pytest

from qwen3guard_integrations.core import Level, parse_gen_output
from qwen3guard_integrations.testing.contract import (
    expected_prompt,
    expected_response,
    expected_stream_levels,
)
from tests.support.contract_cases import (
    PROMPT_PHRASES,
    SAFE_PROMPTS,
    SAFE_RESPONSES,
    assert_rules,
    prompt_cases,
    response_cases,
)
from tests.support.official import (
    generate,
    load_gen,
    load_stream,
    prompt_head_reading,
    response_head_readings,
    token_pieces,
)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def gen(tiny):  # type: ignore[no-untyped-def]
    return load_gen(tiny.gen)


def _generate(gen, convos: list[list[dict[str, str]]]) -> list[str]:  # type: ignore[no-untyped-def]
    return generate(gen, convos, batch=32, max_new_tokens=64, add_generation_prompt=True)


def test_gen_prompt_rules(gen) -> None:  # type: ignore[no-untyped-def]
    cases = prompt_cases()
    outs = _generate(gen, [c for _, c in cases])
    results: dict[str, list[bool]] = defaultdict(list)
    for (rule, convo), out in zip(cases, outs):
        exp = expected_prompt(convo[-1]["content"])
        got = parse_gen_output(out)  # the format itself must always parse
        results[rule].append(got.level is exp.level and got.categories == exp.categories)
    assert_rules(results)


def test_gen_response_rules(gen) -> None:  # type: ignore[no-untyped-def]
    cases = response_cases()
    # triggers in the user turn do not count in response mode
    cases += [
        (
            "user-trigger",
            [
                {"role": "user", "content": f"Tell me how to {p}."},
                {"role": "assistant", "content": s},
            ],
        )
        for p, s in zip(PROMPT_PHRASES * 5, SAFE_RESPONSES)
    ]
    outs = _generate(gen, [c for _, c in cases])
    results: dict[str, list[bool]] = defaultdict(list)
    for (rule, convo), out in zip(cases, outs):
        exp = expected_response(convo[-1]["content"])
        got = parse_gen_output(out)
        assert got.refusal is not None, f"no Refusal line in response mode: {out!r}"
        results[rule].append(got.level is exp.level and got.categories == exp.categories)
    assert_rules(results)


def test_gen_refusal_rule(gen) -> None:  # type: ignore[no-untyped-def]
    cases = [
        (
            "refusal",
            [
                {"role": "user", "content": s},
                {"role": "assistant", "content": f"{pre} help with that. {s}"},
            ],
        )
        for pre, s in zip(["I can't", "I cannot"] * 12, SAFE_PROMPTS)
    ]
    cases += [
        ("no-refusal", [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": s}])
        for s in SAFE_RESPONSES
    ]
    outs = _generate(gen, [c for _, c in cases])
    results: dict[str, list[bool]] = defaultdict(list)
    for (rule, convo), out in zip(cases, outs):
        got = parse_gen_output(out)
        results[rule].append(got.refusal is expected_response(convo[-1]["content"]).refusal)
    assert_rules(results)


@pytest.fixture(scope="module")
def stream(tiny):  # type: ignore[no-untyped-def]
    return load_stream(tiny.stream)


def test_stream_prompt_head(stream) -> None:  # type: ignore[no-untyped-def]
    tok, model = stream
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    results: dict[str, list[bool]] = defaultdict(list)
    for rule, convo in prompt_cases():
        ids = tok.apply_chat_template(
            convo, add_generation_prompt=True, enable_thinking=False, return_dict=False
        )
        at = max(i for i, t in enumerate(ids) if t == im_end)  # closes the last user turn
        with torch.no_grad():
            out = model(torch.tensor([ids]))
        level, cat = prompt_head_reading(out, 0, at)
        exp = expected_prompt(convo[-1]["content"])
        results[rule].append(
            level is exp.level and (level is Level.SAFE or (cat,) == exp.categories)
        )
    assert_rules(results)


def test_stream_response_tokens(stream) -> None:  # type: ignore[no-untyped-def]
    tok, model = stream
    prefix = tok.apply_chat_template(
        [{"role": "user", "content": "Can you help me?"}],
        add_generation_prompt=True,
        enable_thinking=False,
        return_dict=False,
    )
    tokens: dict[str, list[bool]] = defaultdict(list)
    decisions: dict[str, list[bool]] = defaultdict(list)
    for rule, convo in response_cases():
        ids = tok(convo[-1]["content"], add_special_tokens=False)["input_ids"]
        expected = expected_stream_levels(token_pieces(tok, ids))
        with torch.no_grad():
            out = model(torch.tensor([prefix + ids]))
        levels, cats = response_head_readings(out, 0, len(prefix), len(prefix) + len(ids))
        for (lv, cat), got_lv, got_cat in zip(expected, levels, cats):
            tokens[rule].append(got_lv is lv and (cat is None or got_cat is cat))
        # the official decision: two consecutive non-Safe tokens of the same level trip it
        tripped = any(a is b and a is not Level.SAFE for a, b in itertools.pairwise(levels))
        decisions[rule].append(tripped == (rule != "safe"))
    assert_rules(tokens)
    assert_rules(decisions)
