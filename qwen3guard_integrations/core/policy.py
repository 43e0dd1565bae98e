"""The policy: turns a verdict into allow or block, and decides what a backend failure means."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator

from .errors import ConfigurationError, UnsafeContentError
from .labels import Category, Level, Role
from .verdict import Verdict

__all__ = ["OnError", "Policy"]

OnError = Literal["fail_closed", "fail_open"]


def _categories(value: object) -> frozenset[Category]:
    if value is None:
        return frozenset()
    if isinstance(value, (str, Category)):
        value = [value]
    if not isinstance(value, (list, tuple, set, frozenset)):
        raise ConfigurationError("categories must be a list of category names")
    out = set()
    for item in value:
        out.add(item if isinstance(item, Category) else Category.parse(str(item)))
    return frozenset(out)


class Policy(BaseModel):
    """Which verdicts block, and what happens when the backend fails.

    Attributes:
        block_levels: levels that block. ``Policy.strict()`` blocks Controversial and Unsafe
            (the default); ``Policy.loose()`` blocks only Unsafe.
        allow_categories: a blocking-level verdict whose categories all lie in this set is
            allowed (for example allow "Politically Sensitive Topics" in a news app).
        deny_categories: a non-Safe verdict naming any of these blocks whatever its level.
        on_error: ``"fail_closed"`` (default) turns a backend failure into an error;
            ``"fail_open"`` turns it into an allowed verdict marked ``degraded=True``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    block_levels: frozenset[Level] = frozenset({Level.UNSAFE, Level.CONTROVERSIAL})
    allow_categories: frozenset[Category] = frozenset()
    deny_categories: frozenset[Category] = frozenset()
    on_error: OnError = "fail_closed"

    @field_validator("block_levels", mode="before")
    @classmethod
    def _levels(cls, value: object) -> frozenset[Level]:
        if isinstance(value, (str, Level)):
            value = [value]
        if not isinstance(value, (list, tuple, set, frozenset)):
            raise ConfigurationError("block_levels must be a list of levels")
        levels = frozenset(v if isinstance(v, Level) else Level.parse(str(v)) for v in value)
        if Level.SAFE in levels:
            raise ConfigurationError("Safe cannot be a blocking level")
        return levels

    @field_validator("allow_categories", "deny_categories", mode="before")
    @classmethod
    def _cats(cls, value: object) -> frozenset[Category]:
        return _categories(value)

    @classmethod
    def strict(cls, **kwargs: object) -> Policy:
        """Controversial and Unsafe block (the official strict metric)."""
        return cls(block_levels=frozenset({Level.UNSAFE, Level.CONTROVERSIAL}), **kwargs)  # type: ignore[arg-type]

    @classmethod
    def loose(cls, **kwargs: object) -> Policy:
        """Only Unsafe blocks (the official loose metric)."""
        return cls(block_levels=frozenset({Level.UNSAFE}), **kwargs)  # type: ignore[arg-type]

    @property
    def fail_open(self) -> bool:
        """True when backend failures are let through as degraded verdicts."""
        return self.on_error == "fail_open"

    def blocks(self, verdict: Verdict) -> bool:
        """True when ``verdict`` must be blocked under this policy."""
        if verdict.level is Level.SAFE:
            return False
        cats = set(verdict.categories)
        if cats & self.deny_categories:
            return True
        if verdict.level not in self.block_levels:
            return False
        return not (cats and cats <= self.allow_categories)

    def allows(self, verdict: Verdict) -> bool:
        """The negation of `blocks`."""
        return not self.blocks(verdict)

    def enforce(self, verdict: Verdict) -> Verdict:
        """Return ``verdict`` when allowed; raise `UnsafeContentError` when blocked."""
        if self.blocks(verdict):
            raise UnsafeContentError(verdict)
        return verdict

    def degraded_verdict(
        self,
        error: BaseException | str,
        *,
        role: Role,
        model: str | None = None,
        backend: str | None = None,
        endpoint: str | None = None,
        latency_ms: float | None = None,
    ) -> Verdict:
        """The allowed verdict a fail-open policy gives for a failed check.

        Raises ``ValueError`` under fail-closed: callers must re-raise the original error then.
        """
        if not self.fail_open:
            raise ValueError("degraded verdicts exist only under on_error='fail_open'")
        reason = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        return Verdict(
            level=Level.SAFE,
            role=role,
            model=model,
            backend=backend,
            endpoint=endpoint,
            latency_ms=latency_ms,
            degraded=True,
            error=reason,
        )
