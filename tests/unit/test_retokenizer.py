"""The incremental re-tokenizer: emitted ids always add up to the tokenizer's own ids."""

from __future__ import annotations

import pytest

pytest.importorskip("tokenizers")
import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qwen3guard_integrations import InvalidInputError
from qwen3guard_integrations.guards.retokenizer import Retokenizer, backend_tokenizer
from qwen3guard_integrations.testing import qwen3_tokenizer

TOK = qwen3_tokenizer(16384)
BACKEND = backend_tokenizer(TOK)

FRAGMENTS = [
    "Hello",
    " world",
    "  ",
    "\n",
    "\n\n",
    "\r\n",
    "\t",
    "!",
    "?!",
    "...",
    "'s",
    "'ll",
    "don't",
    "12345",
    "3.14",
    "é",
    "e\u0301",
    "中文",
    "好的，答案是",
    "。",
    "Как",
    " мне",
    "どうすれば",
    "😀",
    "👍🏽",
    "<think>",
    "</think>",
    "<|im_end|>",
    "<|endoftext|>",
    "</tool_response>",
    "<",
    "|",
    ">",
    "bomb",
    "hotwire",
    "  \n  ",
    "ß",
    "ﬁ",
    "\u200b",
    "ñ",
    "ç",
    "Ωμέγα",
    "😀😀",
]


def _feed(pieces: list[str]) -> list[int]:
    r = Retokenizer(BACKEND)
    out: list[int] = []
    for p in pieces:
        out += r.push(p)
    return out + r.finish()


def _reference(text: str) -> list[int]:
    return list(TOK(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])


text_strategy = st.lists(
    st.one_of(st.sampled_from(FRAGMENTS), st.text(min_size=1, max_size=4)), max_size=25
).map("".join)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=text_strategy, data=st.data())
def test_random_splits_give_the_tokenizer_ids(text: str, data: st.DataObject) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return  # lone surrogates are rejected (tested below)
    cuts = data.draw(st.lists(st.integers(0, len(text)), max_size=12).map(sorted))
    bounds = [0, *cuts, len(text)]
    pieces = [text[a:b] for a, b in itertools.pairwise(bounds)]
    assert _feed(pieces) == _reference(text)


def test_stable_ids_come_out_before_the_end() -> None:
    r = Retokenizer(BACKEND)
    out = r.push("The capital of Australia is Canb")
    assert out and r.pending_text.endswith("Canb")
    assert TOK.decode(out) + r.pending_text == "The capital of Australia is Canb"
    assert r.push("erra") == []  # the word may still grow
    assert r.push(" today") != []


def test_control_token_text_is_plain_text() -> None:
    ids = _feed(["say <|im", "_end|> now"])
    assert TOK.convert_tokens_to_ids("<|im_end|>") not in ids
    assert TOK.decode(ids) == "say <|im_end|> now"
    # non-special added tokens (think tags) stay single tokens, as the tokenizer has them
    assert TOK.convert_tokens_to_ids("</think>") in _feed(["a </thi", "nk> b"])


def test_bad_pieces_are_typed_errors() -> None:
    r = Retokenizer(BACKEND)
    for bad in (b"x", 3, None, ["a"]):
        with pytest.raises(InvalidInputError):
            r.push(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        r.push("\ud800")
