"""The ``qwen3guard`` console script: `main` (check, and the sub-commands), `demo`,
`model_check`."""

from .main import main

__all__ = ["main"]
