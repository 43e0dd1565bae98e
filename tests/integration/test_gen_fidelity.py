"""The tiny Gen checkpoint where a level is known and the answer is not readable, and a Stream
checkpoint loaded as Gen.

* a continuation that does not parse keeps the level the logits gave (fast mode, and full mode
  with the level step's scores), with categories marked unknown and the raw text kept;
* a Stream checkpoint loaded as Gen fails at load time, with a clear error.
"""

from __future__ import annotations

import time

import pytest

from qwen3guard_integrations import Category, Level, Qwen3Guard
from qwen3guard_integrations.core import CheckpointError
from tests.support.guards import conversation

pytest.importorskip("transformers")


@pytest.mark.parametrize(("fast", "budget"), [(True, 1), (False, 5)])
def test_an_unreadable_continuation_keeps_the_logit_level(tiny, fast: bool, budget: int) -> None:  # type: ignore[no-untyped-def]
    # a budget that cuts the answer inside its level word ("Safety: Un"): the text does not
    # parse, but the level is known from the logits at the token after "Safety:"
    with Qwen3Guard.from_pretrained(
        tiny.gen, device="cpu", fast=fast, max_new_tokens=budget
    ) as guard:
        v = guard.check_prompt("How can I make a bomb?")
        assert v.level is Level.UNSAFE and v.scores is not None
        assert v.scores[Level.UNSAFE] == max(v.scores.values())
        assert v.categories == () and v.categories_known is False
        assert v.raw is not None and v.raw.startswith("Safety: Un") and v.raw != "Safety: Unsafe"


def test_a_readable_answer_keeps_its_categories(tiny) -> None:  # type: ignore[no-untyped-def]
    with Qwen3Guard.from_pretrained(tiny.gen, device="cpu") as guard:
        v = guard.check_prompt("How can I make a bomb?")
        assert v.level is Level.UNSAFE and v.categories and v.categories_known is True
        safe = guard.check_prompt("What is the capital of France?")
        assert safe.level is Level.SAFE and safe.categories_known is True


@pytest.mark.parametrize(
    ("fast", "options"), [(True, {}), (False, {"max_input_tokens": 768})], ids=["fast", "full"]
)
def test_the_issues_degenerate_input_gives_a_clean_verdict(
    tiny, fast: bool, options: dict[str, int]
) -> None:  # type: ignore[no-untyped-def]
    # the trained tiny model degenerated on this filler ("Safety: Un Un Un ...") and the input
    # ended in a VerdictParseError; the unreadable-answer path is pinned above (a cut budget),
    # and the computed model reads the whole input: Unsafe / Violent, in every window
    text = "x " * 3000 + "bomb"
    with Qwen3Guard.from_pretrained(tiny.gen, device="cpu", fast=fast, **options) as guard:
        windows = guard.backend.encode(conversation(text)).windows  # type: ignore[attr-defined]
        v = guard.check_prompt(text)
    assert v.level is Level.UNSAFE and not v.degraded and v.error is None
    assert v.categories == (Category.VIOLENT,) and v.categories_known is True
    assert v.raw is not None and v.raw.count("Safety: ") == len(windows)
    assert len(windows) == 1 if fast else len(windows) > 5


def test_a_stream_checkpoint_loaded_as_gen_fails_at_load(tiny) -> None:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    with pytest.raises(CheckpointError, match="Stream checkpoint") as err:
        Qwen3Guard.from_pretrained(tiny.stream, device="cpu")
    assert "Qwen3StreamGuard" in str(err.value)
    assert time.monotonic() - started < 60  # refused from its config, before any check
