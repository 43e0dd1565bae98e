"""The Stream model: network (:mod:`.model`), strict loading (:mod:`.loading`), the cached forward
(:mod:`.runtime`), the lean one-token step (:mod:`.lean`) and prompt encoding (:mod:`.prompt`).

Submodules import torch on first use; importing this package is free.
"""

__all__: list[str] = []
