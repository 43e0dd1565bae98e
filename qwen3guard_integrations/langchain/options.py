"""Construction-time checks shared by the LangChain Runnables: the guard objects they are given,
their block action, and the deprecated names they still answer to.

Every Runnable validates its options once, in its constructor, and raises `ConfigurationError`
naming what it expected; nothing is left to fail at the first run with a bare ``AttributeError``.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Collection, Mapping
from typing import Any

from ..core.actions import BlockAction, check_action
from ..core.errors import ConfigurationError

__all__ = ["block_action", "deprecated_names", "require_guard", "require_stream_guard"]

# what each kind of guard object must offer (duck-typed: remote clients count too), what to call
# it in an error, and the hint for the other kind (told apart by a method only it has)
_KINDS: dict[str, tuple[tuple[str, ...], str, str, str]] = {
    "guard": (
        ("check", "acheck", "check_prompt", "acheck_prompt", "check_response", "blocks"),
        "a Qwen3Guard (Qwen3Guard.from_pretrained / from_tgi / ...)",
        "session",
        ": a Qwen3StreamGuard moderates streams, use HoldBackStage",
    ),
    "stream_guard": (
        ("session", "asession", "policy"),
        "a Qwen3StreamGuard",
        "check_prompt",
        ": a Qwen3Guard checks whole texts, use PromptGuard / ResponseGuard",
    ),
}


def _require(obj: object, kind: str, owner: str) -> None:
    needs, what, other, hint = _KINDS[kind]
    missing = [name for name in needs if not hasattr(obj, name)]
    if missing:
        raise ConfigurationError(
            f"{owner} needs {what}, got {type(obj).__name__} (it has no {', '.join(missing)})"
            + (hint if hasattr(obj, other) else "")
        )


def require_guard(guard: object, owner: str) -> None:
    """A `ConfigurationError` unless ``guard`` is a Gen guard (a `Qwen3Guard` or a client with
    its check methods)."""
    _require(guard, "guard", owner)


def require_stream_guard(stream_guard: object, owner: str) -> None:
    """A `ConfigurationError` unless ``stream_guard`` is a `Qwen3StreamGuard` (or a client with
    its session API)."""
    _require(stream_guard, "stream_guard", owner)


def block_action(
    value: BlockAction | str,
    allowed: Collection[BlockAction],
    *,
    legacy: Mapping[str, BlockAction] | None = None,
    option: str = "on_block",
    warn: bool = True,
) -> BlockAction:
    """``value`` as a `BlockAction` (via `check_action`); an old spelling in ``legacy`` maps to
    its action, with a `DeprecationWarning` naming the new one when ``warn``."""
    if legacy and isinstance(value, str) and value in legacy:
        new = legacy[value]
        if warn:
            warnings.warn(
                f"{option}={value!r} is deprecated: use {option}={new.value!r}",
                DeprecationWarning,
                stacklevel=3,
            )
        return new
    return check_action(value, allowed=allowed, option=option)


def deprecated_names(
    module: str, names: Mapping[str, tuple[str, Callable[[], Any]]]
) -> Callable[..., Any]:
    """A module ``__getattr__`` serving deprecated ``names`` (old name -> (new name, getter)).

    Each access warns with a `DeprecationWarning` naming the new one, except from inside this
    package (its own modules may still import an old name while they move over). ``depth``: how
    many frames up the caller is (2 when another ``__getattr__`` hands the name on).
    """

    def __getattr__(name: str, depth: int = 1) -> Any:
        if name not in names:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        new, get = names[name]
        caller = sys._getframe(depth).f_globals.get("__name__", "")
        if not str(caller).startswith("qwen3guard_integrations."):
            warnings.warn(
                f"{module}.{name} is deprecated: use {new}",
                DeprecationWarning,
                stacklevel=depth + 1,
            )
        return get()

    return __getattr__
