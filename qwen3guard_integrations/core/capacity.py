"""Errors of a bounded shared engine: full, and a session it evicted.

Kept apart from `errors` only so that parallel work on that module does not collide; both
classes sit in the same tree (`Qwen3GuardError`, `SessionClosedError`).
"""

from __future__ import annotations

from .errors import Qwen3GuardError, SessionClosedError

__all__ = ["EngineFullError", "SessionEvictedError"]


class EngineFullError(Qwen3GuardError):
    """A `StreamEngine` is at its limit of live sessions or cached tokens (and the configured
    wait, if any, ran out). Nothing was started or fed: retry later, or close idle sessions."""


class SessionEvictedError(SessionClosedError):
    """The engine closed this session (idle past its timeout, or its engine was closed); its KV
    cache is gone, so it can never be fed again. Start a new session."""
