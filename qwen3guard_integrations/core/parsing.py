"""Parsing the Gen models' output grammar (SPEC section 2).

::

    Safety: Safe|Unsafe|Controversial
    Categories: <names joined by ", "> | None
    Refusal: Yes|No              (response mode only)

Pitfalls handled: ``<think>...</think>`` blocks are removed first; categories are read from the
``Categories:`` line only and matched as whole names (``Violent`` is inside
``Non-violent Illegal Acts``); case and surrounding whitespace are not significant; a missing
``Safety:`` line, an unknown level or category, or two disagreeing lines of one field are parse
failures (`VerdictParseError`), never "Safe".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import VerdictParseError
from .labels import Category, Level

__all__ = ["ParsedOutput", "parse_gen_output", "strip_think"]

_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_FIELD = re.compile(r"^\s*(safety|categories|category|refusal)\s*:(.*)$", re.IGNORECASE)
_MAX_CHARS = 20_000


@dataclass(frozen=True)
class ParsedOutput:
    """The fields of one Gen output."""

    level: Level
    categories: tuple[Category, ...]
    refusal: bool | None


def strip_think(text: str) -> str:
    """Remove ``<think>...</think>`` blocks; an unclosed ``<think>`` hides all that follows."""
    text = _THINK_BLOCK.sub("", text)
    lower = text.lower()
    open_at = lower.find("<think>")
    if open_at >= 0:
        text = text[:open_at]
    return text.replace("</think>", "").replace("</THINK>", "")


def _one_value(values: list[str], field: str, raw: str) -> str | None:
    if not values:
        return None
    norm = {" ".join(v.split()).lower() for v in values}
    if len(norm) > 1:
        raise VerdictParseError(f"conflicting {field} lines", raw)
    return values[0]


def _parse_categories(value: str, raw: str) -> tuple[Category, ...]:
    value = value.strip().rstrip(".").strip()
    if not value or value.lower() == "none":
        return ()
    out: list[Category] = []
    for part in value.split(","):
        name = part.strip().rstrip(".").strip()
        if not name:
            continue
        if name.lower() == "none":
            raise VerdictParseError("'None' mixed with category names", raw)
        try:
            cat = Category.parse(name)
        except ValueError:
            raise VerdictParseError(f"unknown category {name!r}", raw) from None
        if cat not in out:
            out.append(cat)
    return tuple(out)


def _parse_refusal(value: str, raw: str) -> bool:
    key = value.strip().rstrip(".").strip().lower()
    if key == "yes":
        return True
    if key == "no":
        return False
    raise VerdictParseError(f"unknown refusal value {value.strip()!r}", raw)


def parse_gen_output(text: object) -> ParsedOutput:
    """Parse a Gen model's output; raise `VerdictParseError` on anything malformed.

    Never raises any other exception, whatever ``text`` is.
    """
    if not isinstance(text, str):
        raise VerdictParseError(f"model output must be str, not {type(text).__name__}")
    raw = text
    if len(text) > _MAX_CHARS:
        text = text[:_MAX_CHARS]
    body = strip_think(text)
    fields: dict[str, list[str]] = {"safety": [], "categories": [], "refusal": []}
    for line in body.splitlines():
        m = _FIELD.match(line)
        if m is None:
            continue
        key = m.group(1).lower()
        fields["categories" if key == "category" else key].append(m.group(2))
    safety = _one_value(fields["safety"], "Safety", raw)
    if safety is None:
        raise VerdictParseError("no 'Safety:' line", raw)
    try:
        level = Level.parse(safety.strip().rstrip("."))
    except ValueError:
        raise VerdictParseError(f"unknown safety level {safety.strip()!r}", raw) from None
    cats_value = _one_value(fields["categories"], "Categories", raw)
    categories = _parse_categories(cats_value, raw) if cats_value is not None else ()
    refusal_value = _one_value(fields["refusal"], "Refusal", raw)
    refusal = _parse_refusal(refusal_value, raw) if refusal_value is not None else None
    return ParsedOutput(level=level, categories=categories, refusal=refusal)
