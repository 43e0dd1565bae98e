"""Qwen3Guard safety models for LangChain and LlamaIndex applications.

``import qwen3guard_integrations`` needs only pydantic; the model backends and framework
adapters are imported on first use and name the extra to install when it is missing.
"""

from .core import (
    BackendError,
    Category,
    InvalidInputError,
    Level,
    Message,
    MissingDependencyError,
    ModelLoadError,
    Policy,
    Qwen3GuardError,
    Role,
    UnsafeContentError,
    Verdict,
    VerdictParseError,
    parse_gen_output,
)

__version__ = "0.1.0"

_LAZY = {"Qwen3Guard": ("guard", "Qwen3Guard")}


def __getattr__(name: str) -> object:
    # the guard objects import lazily: ``import qwen3guard_integrations`` needs only pydantic
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(f".{module}", __name__), attr)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BackendError",
    "Category",
    "InvalidInputError",
    "Level",
    "Message",
    "MissingDependencyError",
    "ModelLoadError",
    "Policy",
    "Qwen3Guard",
    "Qwen3GuardError",
    "Role",
    "UnsafeContentError",
    "Verdict",
    "VerdictParseError",
    "__version__",
    "parse_gen_output",
]
