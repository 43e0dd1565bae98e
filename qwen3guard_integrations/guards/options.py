"""`GuardOptions`: the options every `Qwen3Guard` constructor takes, whatever the backend.

`Qwen3Guard.from_pretrained`, `Qwen3Guard.from_tgi` and `Qwen3Guard.from_openai` take their
backend's own arguments by name and pass ``**options`` on to `Qwen3Guard` unchanged, so an option
added here reaches every constructor at once (before this, ``non_text`` reached none of them and
``max_batch`` only one). mypy checks each ``**options`` against this dict.

```python
guard = Qwen3Guard.from_tgi(url, tokenizer="Qwen/Qwen3Guard-Gen-4B", non_text="skip")
shared: GuardOptions = {"policy": Policy.loose(), "normalize": "nfkc"}
local = Qwen3Guard.from_pretrained("Qwen/Qwen3Guard-Gen-0.6B", **shared)
remote = Qwen3Guard.from_openai(url, model="Qwen/Qwen3Guard-Gen-4B", **shared)
```
"""

from __future__ import annotations

from typing import Literal, TypedDict

from ..core.messages import UnicodeNormalization
from ..core.policy import Policy

__all__ = ["GuardOptions"]


class GuardOptions(TypedDict, total=False):
    """What `Qwen3Guard` does with the verdicts, the same for every backend (all optional).

    Attributes:
        policy: which verdicts block and what a backend failure does (default `Policy()`:
            strict, fail-closed).
        fast: read the level from one forward pass and decode categories and refusal only when
            needed (default True); False decodes the whole answer.
        normalize: ``"none"`` (default), ``"format"`` or ``"nfkc"``: the Unicode disguises taken
            off the text the model reads (`normalize_unicode`).
        non_text: ``"error"`` (default) refuses a message with non-text content blocks;
            ``"skip"`` checks only its text blocks.
        max_batch: the most conversations the micro-batcher coalesces into one forward (a local
            model; default 16).
        max_wait_ms: how long the micro-batcher waits for more conversations (default 0: dispatch at once; items that queue during a forward share the next one).
    """

    policy: Policy | None
    fast: bool
    normalize: UnicodeNormalization
    non_text: Literal["error", "skip"]
    max_batch: int
    max_wait_ms: float
