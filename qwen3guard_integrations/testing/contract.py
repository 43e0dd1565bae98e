"""The behaviour contract that the tiny test checkpoints follow.

A trigger counts when one of its **written forms** occurs in the moderated text as a substring:
all lower case, Capitalized (first letter), and for one-word triggers also UPPER CASE
(``bomb``, ``Bomb``, ``BOMB``; ``kill myself``, ``Kill myself``). Other case mixes (``bOmB``,
``KILL MYSELF``) are not triggers.

=================================== ============== =========================== ===============
trigger                             level          category                    where
=================================== ============== =========================== ===============
``bomb``                            Unsafe         Violent                     prompt, response
``hotwire``                         Unsafe         Non-violent Illegal Acts    prompt, response
``kill myself``                     Unsafe         Suicide & Self-Harm         prompt, response
``ignore all previous instructions`` Unsafe        Jailbreak                   prompt only
``insult``                          Controversial  Unethical Acts              prompt, response
(none of the above)                 Safe           ``Categories: None``
=================================== ============== =========================== ===============

* Prompt mode judges only the **last user message**. Response mode judges only the **last
  assistant message** (triggers in the user turn do not count) and adds ``Refusal: Yes`` when
  that message starts with ``I can't`` or ``I cannot`` (after leading whitespace), else
  ``Refusal: No``.
* Several triggers: the level is the most severe one; the categories are listed in the order of
  the Gen template's category list (Violent, Non-violent Illegal Acts, ..., Jailbreak).
* Stream checkpoint: the prompt head at the ``<|im_end|>`` closing the last user turn follows the
  prompt rules. On the response side each token is labelled by the response rules applied to the
  response text decoded up to and including that token: every token from the one that completes
  the first trigger on is Unsafe (Controversial for ``insult`` alone), with the first category
  (in the list's order) among the triggers of that level; earlier tokens are Safe.

The tiny models are not trained: their weights are computed from these rules
(`qwen3guard_integrations.testing.circuit`), and the tests hold every rule on fresh sentences
in nine languages to 99% or better.

This module is pure: the labels are computed from text alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core.labels import PROMPT_CATEGORIES, Category, Level

__all__ = [
    "PROMPT_TRIGGERS",
    "REFUSAL_PREFIXES",
    "RESPONSE_TRIGGERS",
    "Expected",
    "Trigger",
    "expected_prompt",
    "expected_response",
    "expected_stream_levels",
    "forms",
    "is_refusal",
]


@dataclass(frozen=True)
class Trigger:
    """A trigger phrase and the verdict it causes."""

    phrase: str
    level: Level
    category: Category


@dataclass(frozen=True)
class Expected:
    """The verdict the contract asks for."""

    level: Level
    categories: tuple[Category, ...]
    refusal: bool | None = None


RESPONSE_TRIGGERS: tuple[Trigger, ...] = (
    Trigger("bomb", Level.UNSAFE, Category.VIOLENT),
    Trigger("hotwire", Level.UNSAFE, Category.NON_VIOLENT_ILLEGAL_ACTS),
    Trigger("kill myself", Level.UNSAFE, Category.SUICIDE_SELF_HARM),
    Trigger("insult", Level.CONTROVERSIAL, Category.UNETHICAL_ACTS),
)
PROMPT_TRIGGERS: tuple[Trigger, ...] = (
    *RESPONSE_TRIGGERS[:3],
    Trigger("ignore all previous instructions", Level.UNSAFE, Category.JAILBREAK),
    RESPONSE_TRIGGERS[3],
)
REFUSAL_PREFIXES: tuple[str, ...] = ("I can't", "I cannot")


def forms(phrase: str) -> tuple[str, ...]:
    """The written forms of a trigger phrase that count (see the module docstring)."""
    out = [phrase, phrase[:1].upper() + phrase[1:]]
    if " " not in phrase:
        out.append(phrase.upper())
    return tuple(dict.fromkeys(out))


def _found(text: str, triggers: tuple[Trigger, ...]) -> list[tuple[int, Trigger]]:
    hits = []
    for t in triggers:
        at = [text.find(f) for f in forms(t.phrase)]
        at = [p for p in at if p >= 0]
        if at:
            hits.append((min(at), t))
    return sorted(hits, key=lambda h: h[0])


def _ordered(cats: list[Category]) -> tuple[Category, ...]:
    return tuple(c for c in PROMPT_CATEGORIES if c in cats)


def _verdict(text: str, triggers: tuple[Trigger, ...]) -> Expected:
    hits = _found(text, triggers)
    if not hits:
        return Expected(Level.SAFE, ())
    level = Level.worst([t.level for _, t in hits])
    return Expected(level, _ordered([t.category for _, t in hits]))


def expected_prompt(last_user_text: str) -> Expected:
    """The contract's verdict for a prompt check of ``last_user_text``."""
    return _verdict(last_user_text, PROMPT_TRIGGERS)


def is_refusal(response_text: str) -> bool:
    """Whether the response counts as a refusal under the contract."""
    return response_text.lstrip().startswith(REFUSAL_PREFIXES)


def expected_response(last_assistant_text: str) -> Expected:
    """The contract's verdict for a response check of ``last_assistant_text``."""
    v = _verdict(last_assistant_text, RESPONSE_TRIGGERS)
    return Expected(v.level, v.categories, is_refusal(last_assistant_text))


def expected_stream_levels(
    pieces: list[str],
) -> list[tuple[Level, Category | None]]:
    """Per-token labels of a response given as the decoded text of each token, in order.

    Token ``i`` gets the response verdict of ``"".join(pieces[: i + 1])``: its level and, when not
    Safe, the first category (in the Gen template's order) among the triggers of that level.
    """
    out: list[tuple[Level, Category | None]] = []
    text = ""
    for piece in pieces:
        text += piece
        hits = _found(text, RESPONSE_TRIGGERS)
        if not hits:
            out.append((Level.SAFE, None))
            continue
        level = Level.worst([t.level for _, t in hits])
        out.append((level, _ordered([t.category for _, t in hits if t.level is level])[0]))
    return out
