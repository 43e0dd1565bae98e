"""Safety levels, roles and category names of the Qwen3Guard models (SPEC sections 2 and 3)."""

from __future__ import annotations

from enum import Enum

__all__ = [
    "PROMPT_CATEGORIES",
    "RESPONSE_CATEGORIES",
    "STREAM_PROMPT_CATEGORY_ORDER",
    "STREAM_RESPONSE_CATEGORY_ORDER",
    "STREAM_RISK_LEVEL_ORDER",
    "Category",
    "Level",
    "Role",
]


class Level(str, Enum):
    """A safety level. Compare severities with `severity`."""

    SAFE = "Safe"
    CONTROVERSIAL = "Controversial"
    UNSAFE = "Unsafe"

    @property
    def severity(self) -> int:
        """0 for Safe, 1 for Controversial, 2 for Unsafe."""
        return _SEVERITY[self]

    @classmethod
    def parse(cls, name: str) -> Level:
        """The level named ``name`` (case-insensitive); ``ValueError`` if there is none."""
        key = name.strip().lower()
        for level in cls:
            if level.value.lower() == key:
                return level
        raise ValueError(f"unknown safety level {name!r}")

    @classmethod
    def worst(cls, levels: list[Level] | tuple[Level, ...]) -> Level:
        """The most severe of ``levels`` (Safe when empty)."""
        return max(levels, key=lambda lv: lv.severity, default=cls.SAFE)


_SEVERITY = {Level.SAFE: 0, Level.CONTROVERSIAL: 1, Level.UNSAFE: 2}


class Role(str, Enum):
    """What was moderated: the user's prompt or the assistant's response."""

    PROMPT = "prompt"
    RESPONSE = "response"


class Category(str, Enum):
    """The unsafe-content categories, with the exact names the models write."""

    VIOLENT = "Violent"
    NON_VIOLENT_ILLEGAL_ACTS = "Non-violent Illegal Acts"
    SEXUAL_CONTENT = "Sexual Content or Sexual Acts"
    PII = "PII"
    SUICIDE_SELF_HARM = "Suicide & Self-Harm"
    UNETHICAL_ACTS = "Unethical Acts"
    POLITICALLY_SENSITIVE = "Politically Sensitive Topics"
    COPYRIGHT_VIOLATION = "Copyright Violation"
    JAILBREAK = "Jailbreak"

    @classmethod
    def parse(cls, name: str) -> Category:
        """The category named ``name``, matched as a whole name, case-insensitively."""
        key = " ".join(name.split()).lower()
        for cat in cls:
            if cat.value.lower() == key:
                return cat
        raise ValueError(f"unknown category {name!r}")


#: Categories in the Gen prompt-moderation template, in the template's order.
PROMPT_CATEGORIES: tuple[Category, ...] = (
    Category.VIOLENT,
    Category.NON_VIOLENT_ILLEGAL_ACTS,
    Category.SEXUAL_CONTENT,
    Category.PII,
    Category.SUICIDE_SELF_HARM,
    Category.UNETHICAL_ACTS,
    Category.POLITICALLY_SENSITIVE,
    Category.COPYRIGHT_VIOLATION,
    Category.JAILBREAK,
)

#: Categories in the Gen response-moderation template (no Jailbreak).
RESPONSE_CATEGORIES: tuple[Category, ...] = PROMPT_CATEGORIES[:-1]

#: Fallback label orders of the Stream heads (SPEC section 3); checkpoints' config maps win.
STREAM_RISK_LEVEL_ORDER: tuple[Level, ...] = (Level.SAFE, Level.UNSAFE, Level.CONTROVERSIAL)
STREAM_RESPONSE_CATEGORY_ORDER: tuple[Category, ...] = (
    Category.VIOLENT,
    Category.SEXUAL_CONTENT,
    Category.SUICIDE_SELF_HARM,
    Category.POLITICALLY_SENSITIVE,
    Category.PII,
    Category.COPYRIGHT_VIOLATION,
    Category.NON_VIOLENT_ILLEGAL_ACTS,
    Category.UNETHICAL_ACTS,
)
STREAM_PROMPT_CATEGORY_ORDER: tuple[Category, ...] = (
    *STREAM_RESPONSE_CATEGORY_ORDER,
    Category.JAILBREAK,
)
