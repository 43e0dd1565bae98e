"""Qwen3Guard safety models for LangChain and LlamaIndex applications.

``import qwen3guard_integrations`` needs only pydantic; the model backends and framework
adapters are imported on first use and name the extra to install when it is missing.
"""

from typing import TYPE_CHECKING, Any

from .core import (
    BackendConnectionError,
    BackendError,
    BackendHTTPError,
    BackendProtocolError,
    BackendTimeoutError,
    Category,
    CheckpointError,
    ConfigurationError,
    EngineFullError,
    InvalidInputError,
    Level,
    Message,
    MissingDependencyError,
    ModelLoadError,
    Policy,
    Qwen3GuardError,
    Role,
    SessionClosedError,
    SessionEvictedError,
    UnsafeContentError,
    Verdict,
    VerdictParseError,
    parse_gen_output,
)

if TYPE_CHECKING:
    from .guards.gen import Qwen3Guard
    from .guards.stream import Qwen3StreamGuard

#: The release version: written here only (pyproject.toml reads it, `importlib.metadata` agrees).
__version__ = "0.1.0"

#: Names served lazily (they need torch/transformers): name -> module.
_LAZY = {"Qwen3Guard": ".guards.gen", "Qwen3StreamGuard": ".guards.stream"}


def __getattr__(name: str) -> Any:
    # the guard objects import lazily: ``import qwen3guard_integrations`` needs only pydantic
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BackendConnectionError",
    "BackendError",
    "BackendHTTPError",
    "BackendProtocolError",
    "BackendTimeoutError",
    "Category",
    "CheckpointError",
    "ConfigurationError",
    "EngineFullError",
    "InvalidInputError",
    "Level",
    "Message",
    "MissingDependencyError",
    "ModelLoadError",
    "Policy",
    "Qwen3Guard",
    "Qwen3GuardError",
    "Qwen3StreamGuard",
    "Role",
    "SessionClosedError",
    "SessionEvictedError",
    "UnsafeContentError",
    "Verdict",
    "VerdictParseError",
    "__version__",
    "parse_gen_output",
]
