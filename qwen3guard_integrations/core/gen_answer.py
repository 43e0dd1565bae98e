"""From a Gen model's answer text (one per window) to one `Verdict` (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .errors import VerdictParseError
from .labels import Category, Level, Role
from .parsing import ParsedOutput, parse_gen_output
from .verdict import Verdict

__all__ = ["GenAnswer", "parse_answer", "verdict_from_answers"]


@dataclass(frozen=True)
class GenAnswer:
    """What the model wrote for one window, and the level distribution if the backend had it.

    ``scores`` are the level probabilities read from the logits at the token after ``Safety:``
    (fast mode, or full mode when the backend kept the step's scores).
    """

    text: str
    scores: dict[Level, float] | None = None


def parse_answer(answer: GenAnswer) -> tuple[ParsedOutput, bool]:
    """Parse one answer; ``(parsed, categories_known)``.

    When the text does not parse but the level is known from the logits (``scores``), the level
    is kept, with categories unknown (empty) and the refusal unknown (None): a degenerate
    continuation such as ``Safety: Un Un Un ...`` never loses a level the model already gave.
    Without scores a parse failure raises `VerdictParseError`, never a guessed "Safe".
    """
    try:
        return parse_gen_output(answer.text), True
    except VerdictParseError:
        if not answer.scores:
            raise
        level = max(answer.scores, key=answer.scores.__getitem__)
        return ParsedOutput(level=level, categories=(), refusal=None), False


def verdict_from_answers(
    answers: Sequence[GenAnswer],
    *,
    role: Role,
    model: str | None,
    backend: str,
    endpoint: str | None = None,
    latency_ms: float | None = None,
) -> Verdict:
    """Parse each window's answer (`parse_answer`); the worst window wins (its scores are
    reported).

    Categories are merged in order of appearance; the refusal is read from the first window,
    which holds the start of the response. Raises `VerdictParseError` if a window's answer does
    not parse and its level is not known from the logits: a window that cannot be read is never
    taken as Safe.
    """
    if not answers:
        raise VerdictParseError("the backend returned no answer")
    results = [parse_answer(a) for a in answers]
    parsed = [p for p, _ in results]
    worst = max(range(len(parsed)), key=lambda i: parsed[i].level.severity)
    categories: list[Category] = []
    for p in parsed:
        for c in p.categories:
            if c not in categories:
                categories.append(c)
    known = all(k for _, k in results)
    refusal = parsed[0].refusal if role is Role.RESPONSE else None
    raw = answers[0].text if len(answers) == 1 else "\n---\n".join(a.text for a in answers)
    return Verdict(
        level=parsed[worst].level,
        categories=tuple(categories) if known else (),
        categories_known=known,
        refusal=refusal,
        role=role,
        scores=answers[worst].scores,
        model=model,
        backend=backend,
        endpoint=endpoint,
        latency_ms=latency_ms,
        raw=raw,
    )
