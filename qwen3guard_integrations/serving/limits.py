"""The guard server's limits, and the per-connection token bucket that enforces pieces/second."""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..core.errors import ConfigurationError

__all__ = ["ServerLimits", "TokenBucket"]


@dataclass(frozen=True)
class ServerLimits:
    """What one server process accepts.

    Attributes:
        max_message_bytes: the largest HTTP body or WebSocket frame (bytes).
        pieces_per_second: Stream feeds per second per connection (bursts up to ``burst``).
        burst: the bucket size of the rate limit (default: ``pieces_per_second``).
        sessions_per_connection: Stream sessions open at once on one WebSocket.
        max_sessions: Stream sessions open at once on this process (``/ready`` turns 503 when
            full, and a new session is refused with ``ServerBusy``).
        max_batch: conversations in one ``/v1/check_batch``.
        max_concurrency: model calls running at once (the rest wait: ``qwen3guard_queue_depth``).
    """

    max_message_bytes: int = 1 << 20
    pieces_per_second: float = 1000.0
    burst: float | None = None
    sessions_per_connection: int = 4
    max_sessions: int = 256
    max_batch: int = 64
    max_concurrency: int = 8

    def __post_init__(self) -> None:
        for name in (
            "max_message_bytes",
            "sessions_per_connection",
            "max_sessions",
            "max_batch",
            "max_concurrency",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"{name} must be an int >= 1, got {value!r}")
        if not isinstance(self.pieces_per_second, (int, float)) or self.pieces_per_second <= 0:
            raise ConfigurationError(
                f"pieces_per_second must be a positive number, got {self.pieces_per_second!r}"
            )
        if self.burst is not None and (not isinstance(self.burst, (int, float)) or self.burst < 1):
            raise ConfigurationError(f"burst must be a number >= 1, got {self.burst!r}")


class TokenBucket:
    """``rate`` tokens per second, at most ``capacity`` saved up."""

    def __init__(self, rate: float, capacity: float | None = None) -> None:
        self.rate = float(rate)
        self.capacity = float(capacity if capacity is not None else max(rate, 1.0))
        self._tokens = self.capacity
        self._at = time.monotonic()

    def take(self) -> bool:
        """Spend one token; False when the bucket is empty."""
        now = time.monotonic()
        self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False
