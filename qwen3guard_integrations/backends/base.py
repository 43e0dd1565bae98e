"""The backend protocols the guard objects and adapters depend on (never on a concrete backend)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from ..core.messages import Message
from ..core.verdict import Verdict

__all__ = ["GenBackend"]


@runtime_checkable
class GenBackend(Protocol):
    """Anything that turns conversations into Gen verdicts.

    ``check_batch`` returns one entry per conversation, in order: a :class:`Verdict`, or the
    exception that item failed with (bad input, an unparsable answer). A failure of the backend
    as a whole (model crashed, server down) is raised instead.
    """

    name: str
    model_id: str
    endpoint: str | None

    def check_batch(
        self, conversations: Sequence[Sequence[Message]], *, fast: bool = True
    ) -> list[Verdict | Exception]:
        """Check each conversation; the mode follows its last message."""
        ...
