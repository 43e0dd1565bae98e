"""The tiny checkpoints follow their contract on fresh held-out sentences, rule by rule.

Every rule of `qwen3guard_integrations.testing.contract` is measured on at least 100 sentences in
nine languages that the checkpoints' builder never sees (`tests.support.fresh_cases`), through
the official call paths only: Gen with plain ``transformers`` (``apply_chat_template(messages,
tokenize=False)``, greedy ``generate``), Stream with a plain forward over the official rendering.
The table per rule and language is printed (``pytest -s`` shows it); every rule must hold on at
least 99% of its cases (``EXACT``; the computed weights hold all of them today). Gen
decodes with the official budget of 128 new tokens (a smaller one cuts the refusal line after a
long category name and reads as a miss).
"""

from __future__ import annotations

import itertools
from collections import defaultdict

import pytest

from qwen3guard_integrations.core import Level, VerdictParseError, parse_gen_output
from qwen3guard_integrations.testing.contract import (
    expected_prompt,
    expected_response,
    expected_stream_levels,
)
from tests.support.fresh_cases import (
    MIN_CASES,
    fresh_prompt_cases,
    fresh_response_cases,
    rule_table,
)
from tests.support.official import (
    forward_padded,
    generate,
    load_gen,
    load_stream,
    prompt_head_reading,
    response_head_readings,
    token_pieces,
)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.slow

EXACT = 0.99  # per rule (issue "Fidelity", item 4)
Results = dict[tuple[str, str], list[bool]]


def _check(title: str, results: Results) -> None:
    print("\n" + rule_table(title, results))
    per_rule: dict[str, list[bool]] = defaultdict(list)
    for (rule, _), oks in results.items():
        per_rule[rule] += oks
    small = {r: len(ok) for r, ok in per_rule.items() if len(ok) < MIN_CASES}
    assert not small, f"rules with fewer than {MIN_CASES} cases: {small}"
    below = {r: f"{sum(ok)}/{len(ok)}" for r, ok in per_rule.items() if sum(ok) < EXACT * len(ok)}
    assert not below, f"{title}: rules below {EXACT:.0%}: {below}"


@pytest.fixture(scope="module")
def gen(tiny):  # type: ignore[no-untyped-def]
    return load_gen(tiny.gen)


def _gen_results(gen, cases, judge) -> Results:  # type: ignore[no-untyped-def]
    """Generate for every case (the official budget of 128 new tokens) and judge the parsed
    answer with ``judge(rule, messages, verdict)``; an answer that does not parse is a miss."""
    results: Results = defaultdict(list)
    outs = generate(gen, [c for _, _, c in cases], batch=48, max_new_tokens=128)
    for (rule, lang, convo), out in zip(cases, outs):
        try:
            got = parse_gen_output(out)
        except VerdictParseError:
            results[rule, lang].append(False)
            continue
        results[rule, lang].append(judge(rule, convo, got))
    return results


def test_gen_prompt_accuracy(gen) -> None:  # type: ignore[no-untyped-def]
    def judge(rule, convo, got) -> bool:  # type: ignore[no-untyped-def]
        exp = expected_prompt(convo[-1]["content"])
        return bool(got.level is exp.level and got.categories == exp.categories)

    _check("Gen, prompt mode", _gen_results(gen, fresh_prompt_cases(), judge))


def test_gen_response_accuracy(gen) -> None:  # type: ignore[no-untyped-def]
    def judge(rule, convo, got) -> bool:  # type: ignore[no-untyped-def]
        exp = expected_response(convo[-1]["content"])
        if rule in ("refusal", "no refusal"):
            return bool(got.refusal is exp.refusal)
        return bool(got.level is exp.level and got.categories == exp.categories)

    _check("Gen, response mode", _gen_results(gen, fresh_response_cases(), judge))


@pytest.fixture(scope="module")
def stream(tiny):  # type: ignore[no-untyped-def]
    return load_stream(tiny.stream)


def test_stream_prompt_accuracy(stream) -> None:  # type: ignore[no-untyped-def]
    tok, model = stream
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    cases = fresh_prompt_cases()
    results: Results = defaultdict(list)
    for lo in range(0, len(cases), 64):
        chunk = cases[lo : lo + 64]
        rows = [
            tok(
                tok.apply_chat_template(
                    c, tokenize=False, add_generation_prompt=True, enable_thinking=False
                ),
                add_special_tokens=False,
            )["input_ids"]
            for _, _, c in chunk
        ]
        out = forward_padded(model, rows, tok.pad_token_id)
        for b, ((rule, lang, convo), ids) in enumerate(zip(chunk, rows)):
            at = max(i for i, t in enumerate(ids) if t == im_end)  # closes the last user turn
            level, cat = prompt_head_reading(out, b, at)
            exp = expected_prompt(convo[-1]["content"])
            results[rule, lang].append(
                level is exp.level and (level is Level.SAFE or (cat,) == exp.categories)
            )
    _check("Stream, prompt head at the last user turn's <|im_end|>", results)


def test_stream_response_accuracy(stream) -> None:  # type: ignore[no-untyped-def]
    tok, model = stream
    cases = [c for c in fresh_response_cases() if c[0] not in ("refusal", "no refusal")]
    tokens: Results = defaultdict(list)
    decisions: Results = defaultdict(list)
    for lo in range(0, len(cases), 64):
        chunk = cases[lo : lo + 64]
        rows, starts, expected = [], [], []
        for _, _, convo in chunk:
            prefix = tok(
                tok.apply_chat_template(
                    convo[:-1], tokenize=False, add_generation_prompt=True, enable_thinking=False
                ),
                add_special_tokens=False,
            )["input_ids"]
            ids = tok(convo[-1]["content"], add_special_tokens=False)["input_ids"]
            rows.append(prefix + ids)
            starts.append(len(prefix))
            expected.append(expected_stream_levels(token_pieces(tok, ids)))
        out = forward_padded(model, rows, tok.pad_token_id)
        for b, (rule, lang, _) in enumerate(chunk):
            levels, cats = response_head_readings(out, b, starts[b], len(rows[b]))
            for (lv, cat), got_lv, got_cat in zip(expected[b], levels, cats):
                tokens[rule, lang].append(got_lv is lv and (cat is None or got_cat is cat))
            want = any(lv is not Level.SAFE for lv, _ in expected[b])
            tripped = any(x is y and x is not Level.SAFE for x, y in itertools.pairwise(levels))
            decisions[rule, lang].append(tripped == want)
    _check("Stream, response head: every token", tokens)
    _check("Stream, response head: the official consecutive decision per answer", decisions)
