"""The guards most integration tests share: one per test module, on the tiny checkpoints, on
CPU. A module that needs other options defines its own fixture of the same name."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from qwen3guard_integrations import Qwen3Guard, Qwen3StreamGuard


@pytest.fixture(scope="module")
def guard(tiny) -> Iterator[Qwen3Guard]:  # type: ignore[no-untyped-def]
    """The Gen guard, default options."""
    g = Qwen3Guard.from_pretrained(tiny.gen, device="cpu")
    yield g
    g.close()


@pytest.fixture(scope="module")
def sguard(tiny) -> Qwen3StreamGuard:  # type: ignore[no-untyped-def]
    """The Stream guard, default options (sessions through its engine)."""
    return Qwen3StreamGuard.from_pretrained(tiny.stream, device="cpu")


@pytest.fixture(scope="module")
def stream_guard(sguard: Qwen3StreamGuard) -> Qwen3StreamGuard:
    """`sguard` under the name the LlamaIndex tests use."""
    return sguard
