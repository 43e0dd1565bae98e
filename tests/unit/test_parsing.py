"""The Gen output parser: the grammar of SPEC section 2 and its pitfalls."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qwen3guard_integrations.core import Category, Level, VerdictParseError, parse_gen_output

C = Category

GOOD = [
    ("Safety: Safe\nCategories: None", Level.SAFE, (), None),
    ("Safety: Unsafe\nCategories: Violent", Level.UNSAFE, (C.VIOLENT,), None),
    (
        "Safety: Unsafe\nCategories: Non-violent Illegal Acts",
        Level.UNSAFE,
        (C.NON_VIOLENT_ILLEGAL_ACTS,),
        None,
    ),
    (
        "Safety: Controversial\nCategories: Politically Sensitive Topics",
        Level.CONTROVERSIAL,
        (C.POLITICALLY_SENSITIVE,),
        None,
    ),
    ("Safety: Unsafe\nCategories: Jailbreak", Level.UNSAFE, (C.JAILBREAK,), None),
    # several categories; "Violent" must not be found inside "Non-violent Illegal Acts"
    (
        "Safety: Unsafe\nCategories: Non-violent Illegal Acts, Violent",
        Level.UNSAFE,
        (C.NON_VIOLENT_ILLEGAL_ACTS, C.VIOLENT),
        None,
    ),
    (
        "Safety: Unsafe\nCategories: Suicide & Self-Harm, PII, Copyright Violation",
        Level.UNSAFE,
        (C.SUICIDE_SELF_HARM, C.PII, C.COPYRIGHT_VIOLATION),
        None,
    ),
    # response mode
    ("Safety: Safe\nCategories: None\nRefusal: Yes", Level.SAFE, (), True),
    (
        "Safety: Unsafe\nCategories: Sexual Content or Sexual Acts\nRefusal: No",
        Level.UNSAFE,
        (C.SEXUAL_CONTENT,),
        False,
    ),
    # think blocks are removed before parsing, even when they mention other labels
    (
        "<think>\nSafety: Safe? Categories: Violent\n</think>\n\nSafety: Unsafe\nCategories: PII",
        Level.UNSAFE,
        (C.PII,),
        None,
    ),
    ("<think>\n\n</think>\n\nSafety: Safe\nCategories: None", Level.SAFE, (), None),
    # whitespace and case are not significant
    (
        "  Safety:   Unsafe  \n\n  Categories:  Violent ,  PII  \n",
        Level.UNSAFE,
        (C.VIOLENT, C.PII),
        None,
    ),
    (
        "safety: unsafe\ncategories: unethical acts\nrefusal: no",
        Level.UNSAFE,
        (C.UNETHICAL_ACTS,),
        False,
    ),
    ("SAFETY: CONTROVERSIAL\nCATEGORIES: NONE", Level.CONTROVERSIAL, (), None),
    ("Safety: Safe\r\nCategories: None\r\n", Level.SAFE, (), None),
    # the names "Violent" in the Safety line or elsewhere do not count as categories
    ("Safety: Safe\nCategories: None\nNote: not Violent", Level.SAFE, (), None),
    # a missing Categories line is allowed (decoding stopped after the level)
    ("Safety: Unsafe", Level.UNSAFE, (), None),
    # duplicate category names collapse; a trailing period is tolerated
    ("Safety: Unsafe\nCategories: Violent, Violent.", Level.UNSAFE, (C.VIOLENT,), None),
    # a repeated but agreeing line is fine
    ("Safety: Unsafe\nSafety: unsafe\nCategories: PII", Level.UNSAFE, (C.PII,), None),
    # "Category:" (singular) is read like "Categories:"
    ("Safety: Unsafe\nCategory: Violent", Level.UNSAFE, (C.VIOLENT,), None),
]


@pytest.mark.parametrize(("text", "level", "categories", "refusal"), GOOD)
def test_parses(
    text: str, level: Level, categories: tuple[Category, ...], refusal: bool | None
) -> None:
    out = parse_gen_output(text)
    assert out.level is level
    assert out.categories == categories
    assert out.refusal is refusal


BAD = [
    ("", "no 'Safety:' line"),
    ("Categories: Violent", "no 'Safety:' line"),  # missing Safety line is NOT "Safe"
    ("The content is safe.", "no 'Safety:' line"),
    ("Safety: Maybe\nCategories: None", "unknown safety level"),
    ("Safety:\nCategories: None", "unknown safety level"),
    ("Safety: Unsafe\nCategories: Hate Speech", "unknown category"),
    ("Safety: Unsafe\nCategories: Violence", "unknown category"),
    ("Safety: Unsafe\nCategories: None, Violent", "'None' mixed"),
    ("Safety: Safe\nSafety: Unsafe", "conflicting Safety"),
    ("Safety: Unsafe\nCategories: PII\nCategories: Violent", "conflicting Categories"),
    ("Safety: Safe\nCategories: None\nRefusal: Maybe", "unknown refusal"),
    ("<think>Safety: Unsafe\nCategories: Violent", "no 'Safety:' line"),  # unclosed think hides all
    ("<think>reasoning</think>", "no 'Safety:' line"),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_rejects(text: str, message: str) -> None:
    with pytest.raises(VerdictParseError, match=message) as info:
        parse_gen_output(text)
    assert info.value.raw == text


@pytest.mark.parametrize("value", [None, 3, b"Safety: Safe", ["Safety: Safe"]])
def test_rejects_non_strings(value: object) -> None:
    with pytest.raises(VerdictParseError):
        parse_gen_output(value)


_alphabet = st.sampled_from(
    [
        *list("SafetyUnsCtrvilgoNnYes:, \n\t-&<>/"),
        "Safety:",
        "Categories:",
        "Refusal:",
        "<think>",
        "</think>",
        " Unsafe",
        " Safe",
        " None",
        " Violent",
        "\r",
        "\u200b",
        "é",
        "\ud7ff",
    ]
)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(), st.lists(_alphabet, max_size=40).map("".join)))
def test_never_raises_anything_else(text: str) -> None:
    try:
        out = parse_gen_output(text)
    except VerdictParseError:
        return
    assert isinstance(out.level, Level)
    assert all(isinstance(c, Category) for c in out.categories)
    assert "safety" in text.lower()
