"""The ``qwen3guard`` console script: :mod:`.main` (check, and the sub-commands), :mod:`.demo`,
:mod:`.model_check`."""

from .main import main

__all__ = ["main"]
