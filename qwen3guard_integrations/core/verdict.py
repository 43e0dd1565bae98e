"""The verdict: one immutable, typed result for every backend and every adapter."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .labels import Category, Level, Role

__all__ = ["Verdict"]


class Verdict(BaseModel):
    """What a guard model said about one prompt or response.

    Attributes:
        level: Safe, Controversial or Unsafe.
        categories: the unsafe-content categories named by the model, in its order.
        categories_known: False when the model's answer could not be read past its level (the
            level then came from the logits); ``categories`` is empty and ``raw`` keeps the text.
        refusal: response mode only: whether the response is a refusal (None when unknown).
        role: whether a prompt or a response was moderated.
        scores: probability of each level where the backend can give it.
        token_index: streams only: index (in the moderated response tokens) of the token at
            which the stream was flagged.
        text_until: streams only: the response text up to and including that token.
        model: model id or path; backend: backend name; endpoint: serving URL if remote.
        latency_ms: wall time the check took.
        degraded: True when a backend failure was let through by a fail-open policy; then
            ``error`` says why, and the level is not the model's.
        raw: the model's raw output text (Gen backends).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    level: Level
    categories: tuple[Category, ...] = ()
    categories_known: bool = True
    refusal: bool | None = None
    role: Role = Role.PROMPT
    scores: dict[Level, float] | None = None
    token_index: int | None = Field(default=None, ge=0)
    text_until: str | None = None
    model: str | None = None
    backend: str | None = None
    endpoint: str | None = None
    latency_ms: float | None = Field(default=None, ge=0)
    degraded: bool = False
    error: str | None = None
    raw: str | None = None

    @field_validator("scores")
    @classmethod
    def _check_scores(cls, value: dict[Level, float] | None) -> dict[Level, float] | None:
        if value is None:
            return None
        for level, p in value.items():
            if not 0.0 <= p <= 1.0 + 1e-6:
                raise ValueError(f"score of {level.value} is not a probability: {p}")
        return value

    def __hash__(self) -> int:
        return hash((self.level, self.categories, self.refusal, self.role, self.token_index))

    @property
    def is_safe(self) -> bool:
        """True when the level is Safe."""
        return self.level is Level.SAFE

    @property
    def is_unsafe(self) -> bool:
        """True when the level is Unsafe."""
        return self.level is Level.UNSAFE

    @property
    def is_controversial(self) -> bool:
        """True when the level is Controversial."""
        return self.level is Level.CONTROVERSIAL

    def has_category(self, name: str | Category) -> bool:
        """True when ``name`` (a `Category` or its exact name) is among the categories."""
        cat = name if isinstance(name, Category) else Category.parse(name)
        return cat in self.categories

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (enums as their names' strings)."""
        data = self.model_dump(mode="json")
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Verdict:
        """The inverse of `to_dict`."""
        return cls.model_validate(data)
