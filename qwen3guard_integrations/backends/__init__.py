"""Backends: the Gen and Stream model implementations (local and remote).

Submodules import their heavy dependencies on first use; importing this package is free.
"""

__all__: list[str] = []
