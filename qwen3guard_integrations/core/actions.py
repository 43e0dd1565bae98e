"""What happens when a guard blocks: one vocabulary for every adapter (pure).

Every adapter takes its block behaviour as a `BlockAction` (or its string value) and its
refusal text as a template rendered by `render_refusal`; each validates the option once, at
construction, with `check_action`. An adapter maps these to its host's own words only where
the host has them (the LangChain agent middleware keeps ``exit_behavior`` ``"end"`` /
``"error"`` / ``"replace"``, like LangChain's own moderation middleware):

=============  ============================================================================
action         what the caller gets
=============  ============================================================================
``raise``      an `UnsafeContentError` carrying the verdict (the default everywhere)
``refuse``     the refusal text in place of the blocked answer, and the run ends there
``replace``    the refusal text in place of the blocked item, and the run goes on
``drop``       the blocked item is left out (retrieved nodes, a query's context)
``flag``       the item is kept, marked with its verdict (retrieved nodes)
=============  ============================================================================

The refusal template may name ``{level}``, ``{categories}`` and ``{stage}``; a template
without fields is used as written.
"""

from __future__ import annotations

from collections.abc import Collection
from enum import Enum
from typing import Literal

from .errors import ConfigurationError
from .verdict import Verdict

__all__ = [
    "DEFAULT_REFUSAL",
    "BlockAction",
    "BlockActionName",
    "check_action",
    "check_refusal",
    "render_refusal",
]

#: The refusal text every adapter uses unless given another.
DEFAULT_REFUSAL = "Sorry, I can't help with that."


class BlockAction(str, Enum):
    """What an adapter does with content its policy blocks (see the module docstring)."""

    RAISE = "raise"
    REFUSE = "refuse"
    REPLACE = "replace"
    DROP = "drop"
    FLAG = "flag"


#: The string values `BlockAction` accepts, for type hints of options.
BlockActionName = Literal["raise", "refuse", "replace", "drop", "flag"]


def check_action(
    value: BlockAction | str,
    *,
    allowed: Collection[BlockAction],
    option: str = "on_block",
) -> BlockAction:
    """``value`` as a `BlockAction`, or a `ConfigurationError` naming ``option`` and the
    actions this adapter accepts."""
    names = ", ".join(repr(a.value) for a in allowed)
    try:
        action = BlockAction(value)
    except ValueError:
        raise ConfigurationError(f"{option} must be one of {names}, got {value!r}") from None
    if action not in allowed:
        raise ConfigurationError(f"{option} must be one of {names} here, got {value!r}")
    return action


def check_refusal(template: object, *, option: str = "refusal") -> str:
    """``template`` if it is a string whose fields are the known ones, else a
    `ConfigurationError` (raised at construction rather than at the first block)."""
    if not isinstance(template, str):
        raise ConfigurationError(f"{option} must be a string, got {type(template).__name__}")
    try:
        template.format(level="", categories="", stage="")
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigurationError(
            f"{option} may only name {{level}}, {{categories}} and {{stage}}: {exc}"
        ) from None
    return template


def render_refusal(template: str, verdict: Verdict | None = None, *, stage: str = "") -> str:
    """The refusal text for ``verdict`` (its fields filled in where the template names them)."""
    if "{" not in template:
        return template
    level = verdict.level.value if verdict is not None else ""
    cats = ", ".join(c.value for c in verdict.categories) if verdict is not None else ""
    return template.format(level=level, categories=cats or "no category", stage=stage)
