"""The Stream model: network (`model`), strict loading (`loading`), the cached forward
(`runtime`), the lean one-token step (`lean`) and prompt encoding (`prompt`).

Submodules import torch on first use; importing this package is free.
"""

__all__: list[str] = []
