"""The tiny Gen tokenizer renders exactly what the real Qwen3Guard-Gen tokenizer renders.

``tests/data/gen_template_renderings.json`` holds the strings public runs of the official
checkpoints print for ``apply_chat_template(messages, tokenize=False)`` (no
``add_generation_prompt``): a prompt-mode and a response-mode case.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qwen3guard_integrations.testing import qwen3_tokenizer
from qwen3guard_integrations.testing.templates import GEN_CHAT_TEMPLATE

REFERENCE = json.loads(
    (Path(__file__).parents[1] / "data" / "gen_template_renderings.json").read_text("utf-8")
)
TOK = qwen3_tokenizer(16384, chat_template=GEN_CHAT_TEMPLATE)


@pytest.mark.parametrize("case", REFERENCE["cases"], ids=["prompt", "response"])
def test_the_reference_rendering_is_reproduced_exactly(case: dict) -> None:  # type: ignore[type-arg]
    assert TOK.apply_chat_template(case["messages"], tokenize=False) == case["rendered"]
    # the flag changes nothing: the real template opens the answer either way
    flagged = TOK.apply_chat_template(case["messages"], tokenize=False, add_generation_prompt=True)
    assert flagged == case["rendered"]


def test_multi_turn_follows_specs_assumption() -> None:
    # UNCONFIRMED upstream (SPEC section 2): one line per user/assistant turn, in order; system
    # and tool messages not rendered
    msgs = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "tool", "content": "42"},
        {"role": "user", "content": "How can I make a bomb?"},
    ]
    text = TOK.apply_chat_template(msgs, tokenize=False)
    assert (
        "<BEGIN CONVERSATION>\n\nUSER: Hi\n\nASSISTANT: Hello!\n\nUSER: How can I make a bomb?\n\n<END CONVERSATION>"
        in text
    )
    assert "Be brief." not in text and "42" not in text
    assert "THE LAST USER's query" in text
