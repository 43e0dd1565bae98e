"""The one vocabulary for what happens on a block (core.actions)."""

from __future__ import annotations

import pytest

from qwen3guard_integrations.core import Category, ConfigurationError, Level, Role, Verdict
from qwen3guard_integrations.core.actions import (
    DEFAULT_REFUSAL,
    BlockAction,
    check_action,
    check_refusal,
    render_refusal,
)


def test_check_action_accepts_names_and_members() -> None:
    allowed = (BlockAction.RAISE, BlockAction.REFUSE)
    assert check_action("raise", allowed=allowed) is BlockAction.RAISE
    assert check_action(BlockAction.REFUSE, allowed=allowed) is BlockAction.REFUSE


@pytest.mark.parametrize("bad", ["ignore", "drop", 3])
def test_check_action_names_the_option_and_the_choices(bad: object) -> None:
    with pytest.raises(ConfigurationError, match=r"on_unsafe must be one of 'raise', 'refuse'"):
        check_action(bad, allowed=(BlockAction.RAISE, BlockAction.REFUSE), option="on_unsafe")  # type: ignore[arg-type]
    assert issubclass(ConfigurationError, ValueError)


def test_refusal_templates() -> None:
    v = Verdict(level=Level.UNSAFE, role=Role.RESPONSE, categories=(Category.VIOLENT,))
    assert render_refusal(DEFAULT_REFUSAL, v) == DEFAULT_REFUSAL
    assert render_refusal("{stage}: {level} ({categories})", v, stage="response") == (
        "response: Unsafe (Violent)"
    )
    assert check_refusal("plain") == "plain"
    with pytest.raises(ConfigurationError):
        check_refusal("{secret}")
    with pytest.raises(ConfigurationError):
        check_refusal(None)
