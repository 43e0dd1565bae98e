"""The guard objects adapters talk to: `Qwen3Guard` (with its micro-batcher),
`Qwen3StreamGuard`, stream sessions, hold-back release and the re-tokenizer.

Submodules import their heavy dependencies on first use; importing this package is free.
"""

__all__: list[str] = []
