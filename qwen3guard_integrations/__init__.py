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
    Policy,
    Qwen3GuardError,
    Role,
    UnsafeContentError,
    Verdict,
    VerdictParseError,
    parse_gen_output,
)

__version__ = "0.1.0"

__all__ = [
    "BackendError",
    "Category",
    "InvalidInputError",
    "Level",
    "Message",
    "MissingDependencyError",
    "Policy",
    "Qwen3GuardError",
    "Role",
    "UnsafeContentError",
    "Verdict",
    "VerdictParseError",
    "__version__",
    "parse_gen_output",
]
