"""Gen on a local ``transformers`` model: prompt encoding (`prompt`) and the batched model (`local`).

Submodules import torch and transformers on first use; importing this package is free.
"""

__all__: list[str] = []
