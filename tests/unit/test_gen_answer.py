"""Gen answers to verdicts: a level known from the logits is never lost to an unreadable answer."""

from __future__ import annotations

import pytest

from qwen3guard_integrations.core import VerdictParseError
from qwen3guard_integrations.core.gen_answer import GenAnswer, parse_answer, verdict_from_answers
from qwen3guard_integrations.core.labels import Category, Level, Role

UNSAFE_SCORES = {Level.SAFE: 0.1, Level.UNSAFE: 0.8, Level.CONTROVERSIAL: 0.1}
DEGENERATE = "Safety: Un Un Un Un Un Un Un Un"


def test_a_readable_answer_parses_with_its_categories() -> None:
    parsed, known = parse_answer(GenAnswer("Safety: Unsafe\nCategories: Violent", UNSAFE_SCORES))
    assert known is True and parsed.level is Level.UNSAFE
    assert parsed.categories == (Category.VIOLENT,)


@pytest.mark.parametrize("text", [DEGENERATE, "Safety: Uns", "", "garbage", "Safety:"])
def test_an_unreadable_answer_keeps_the_logit_level(text: str) -> None:
    parsed, known = parse_answer(GenAnswer(text, UNSAFE_SCORES))
    assert known is False and parsed.level is Level.UNSAFE
    assert parsed.categories == () and parsed.refusal is None


@pytest.mark.parametrize("text", [DEGENERATE, "Safety: Uns", ""])
def test_without_scores_an_unreadable_answer_is_an_error_never_safe(text: str) -> None:
    with pytest.raises(VerdictParseError):
        parse_answer(GenAnswer(text))
    with pytest.raises(VerdictParseError):
        verdict_from_answers([GenAnswer(text)], role=Role.PROMPT, model="m", backend="b")


def test_the_verdict_says_categories_are_unknown_and_keeps_the_raw_text() -> None:
    v = verdict_from_answers(
        [GenAnswer(DEGENERATE, UNSAFE_SCORES)], role=Role.PROMPT, model="m", backend="b"
    )
    assert v.level is Level.UNSAFE and v.categories == () and v.categories_known is False
    assert v.raw == DEGENERATE and v.scores == UNSAFE_SCORES


def test_one_unreadable_window_makes_the_merged_categories_unknown() -> None:
    safe = {Level.SAFE: 0.9, Level.UNSAFE: 0.05, Level.CONTROVERSIAL: 0.05}
    answers = [
        GenAnswer("Safety: Safe\nCategories: None", safe),
        GenAnswer(DEGENERATE, UNSAFE_SCORES),  # the window with the trigger
        GenAnswer("Safety: Controversial\nCategories: PII", None),
    ]
    v = verdict_from_answers(answers, role=Role.PROMPT, model="m", backend="b")
    assert v.level is Level.UNSAFE and v.categories_known is False and v.categories == ()
    assert DEGENERATE in (v.raw or "")
    readable = verdict_from_answers(
        [answers[0], answers[2]], role=Role.PROMPT, model="m", backend="b"
    )
    assert readable.categories_known is True and readable.categories == (Category.PII,)


def test_response_mode_refusal_is_unknown_when_the_answer_is_unreadable() -> None:
    v = verdict_from_answers(
        [GenAnswer("Safety: Sa Sa Sa", {Level.SAFE: 0.9, Level.UNSAFE: 0.1})],
        role=Role.RESPONSE,
        model="m",
        backend="b",
    )
    assert v.level is Level.SAFE and v.refusal is None and v.categories_known is False
