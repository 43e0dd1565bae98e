"""From a Gen model's answer text (one per window) to one `Verdict` (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .errors import VerdictParseError
from .labels import Category, Level, Role
from .parsing import parse_gen_output
from .verdict import Verdict

__all__ = ["GenAnswer", "verdict_from_answers"]


@dataclass(frozen=True)
class GenAnswer:
    """What the model wrote for one window, and the level distribution if the backend had it."""

    text: str
    scores: dict[Level, float] | None = None


def verdict_from_answers(
    answers: Sequence[GenAnswer],
    *,
    role: Role,
    model: str | None,
    backend: str,
    endpoint: str | None = None,
    latency_ms: float | None = None,
) -> Verdict:
    """Parse each window's answer; the worst window wins (its scores are reported).

    Categories are merged in order of appearance; the refusal is read from the first window,
    which holds the start of the response. Raises `VerdictParseError` if any window's
    answer does not parse: a window that cannot be read is never taken as Safe.
    """
    if not answers:
        raise VerdictParseError("the backend returned no answer")
    parsed = [parse_gen_output(a.text) for a in answers]
    worst = max(range(len(parsed)), key=lambda i: parsed[i].level.severity)
    categories: list[Category] = []
    for p in parsed:
        for c in p.categories:
            if c not in categories:
                categories.append(c)
    refusal = parsed[0].refusal if role is Role.RESPONSE else None
    raw = answers[0].text if len(answers) == 1 else "\n---\n".join(a.text for a in answers)
    return Verdict(
        level=parsed[worst].level,
        categories=tuple(categories),
        refusal=refusal,
        role=role,
        scores=answers[worst].scores,
        model=model,
        backend=backend,
        endpoint=endpoint,
        latency_ms=latency_ms,
        raw=raw,
    )
