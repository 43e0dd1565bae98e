"""The health side of the serving backends: the server's health route, then its info route.

`HealthRoutes` is `RemoteGenBackend`'s base class; the protocols (TGI, OpenAI-compatible) name
their two routes and read the info route's answer (`_health_routes`, `_health_info`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ...core.errors import BackendError, BackendTimeoutError
from ..base import BackendHealth
from .http import aget, deadline_scope, get, raise_for_status

__all__ = ["HealthRoutes"]


class HealthRoutes:
    """``health`` / ``ahealth`` over a protocol's health and info routes."""

    name: str
    endpoint: str | None
    timeout: float
    _http: Any  # an httpx.Client, set by the backend
    _aloop_state: Callable[[], Awaitable[dict[str, Any]]]
    _timed_out: Callable[[], BackendTimeoutError]

    def _health_routes(self) -> tuple[str, str]:
        """The URLs of the health route and of the info route."""
        raise NotImplementedError

    def _health_info(self, data: Any) -> tuple[dict[str, Any], str | None]:
        """The info route's answer as ``BackendHealth.info``, and why it is not ok (or None)."""
        raise NotImplementedError

    def health(self) -> BackendHealth:
        """Read the server's health route, then its info route: ``ok`` when ready to serve."""
        start = time.perf_counter()
        health_url, info_url = self._health_routes()
        where = {"backend": self.name, "endpoint": self.endpoint or ""}
        try:
            with deadline_scope(self.timeout):
                res = get(self._http, health_url, **where)
                data = None
                if res.status == 200:
                    got = get(self._http, info_url, **where)
                    raise_for_status(got, **where)
                    data = got.json(**where)
        except BackendError as exc:
            return self._health_failed(exc, start)
        return self._health_from(res.status, data, start)

    async def ahealth(self) -> BackendHealth:
        """Async twin of `health`."""
        start = time.perf_counter()
        health_url, info_url = self._health_routes()
        where = {"backend": self.name, "endpoint": self.endpoint or ""}
        http = (await self._aloop_state())["http"]

        async def read() -> tuple[int, Any]:
            with deadline_scope(self.timeout):
                res = await aget(http, health_url, **where)
                if res.status != 200:
                    return res.status, None
                got = await aget(http, info_url, **where)
                raise_for_status(got, **where)
                return res.status, got.json(**where)

        try:
            status, data = await asyncio.wait_for(read(), self.timeout)
        except BackendError as exc:
            return self._health_failed(exc, start)
        except asyncio.TimeoutError:
            return self._health_failed(self._timed_out(), start)
        return self._health_from(status, data, start)

    def _health_failed(self, exc: BackendError, start: float) -> BackendHealth:
        return BackendHealth(
            False, self.name, self.endpoint, exc.status, error=str(exc), latency_ms=_ms(start)
        )

    def _health_from(self, status: int, data: Any, start: float) -> BackendHealth:
        if status != 200:
            error: str | None = f"the health route answered {status}"
            return BackendHealth(False, self.name, self.endpoint, status, {}, error, _ms(start))
        info, error = self._health_info(data)
        return BackendHealth(
            error is None, self.name, self.endpoint, status, info, error, _ms(start)
        )


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000
