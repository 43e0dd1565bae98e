"""The guard server on Ray Serve (extra ``ray``): one engine per replica, sessions pinned.

```python
from qwen3guard_integrations.serving.ray import guard_deployment, run_on_ray

app = guard_deployment({"gen_model": GEN, "stream_model": STREAM}, max_replicas=4)
serve.run(app, route_prefix="/")           # or: qwen3guard serve --ray --gen-model ... --stream-model ...
```

* Every replica runs the whole app (`create_app`) with its own Gen guard and Stream engine, on
  one GPU when the cluster has GPUs (``gpus_per_replica``).
* Session affinity: a Stream session is one WebSocket, and Ray Serve's proxy keeps a WebSocket on
  the replica that accepted it for the connection's life, so every feed of a session reaches
  the replica holding its KV cache. Every answer names its replica; the client checks it and
  fails closed on a mismatch. When a replica dies, its sessions' connections drop and the
  clients get a typed `BackendConnectionError` (fail-closed) or ``degraded`` verdicts.
* Gen checks are plain HTTP requests: any replica answers them.
* Autoscaling: an open WebSocket is an ongoing request of its replica for its whole life, so
  Ray Serve's ``target_ongoing_requests`` scales on live sessions plus queued Gen checks
  (``target_sessions`` per replica); ``max_ongoing_requests`` caps a replica at ``max_sessions``.
"""

from __future__ import annotations

import time
from typing import Any

from ..core.deps import require
from ..core.errors import ConfigurationError
from .limits import ServerLimits

__all__ = ["deployment_options", "guard_deployment", "run_on_ray"]


def deployment_options(
    *,
    limits: ServerLimits,
    min_replicas: int = 1,
    max_replicas: int = 1,
    target_sessions: int = 16,
    gpus_per_replica: float | None = None,
    cpus_per_replica: float = 1.0,
) -> dict[str, Any]:
    """The ``serve.deployment`` options: replicas or autoscaling, resources, session caps."""
    if not (isinstance(min_replicas, int) and isinstance(max_replicas, int)):
        raise ConfigurationError("min_replicas and max_replicas must be ints")
    if min_replicas < 1 or max_replicas < min_replicas:
        raise ConfigurationError(
            f"need 1 <= min_replicas <= max_replicas, got {min_replicas} and {max_replicas}"
        )
    if not isinstance(target_sessions, int) or target_sessions < 1:
        raise ConfigurationError(f"target_sessions must be an int >= 1, got {target_sessions!r}")
    if gpus_per_replica is None:
        gpus_per_replica = 1.0 if _cluster_gpus() > 0 else 0.0
    opts: dict[str, Any] = {
        "max_ongoing_requests": limits.max_sessions + limits.max_concurrency,
        "ray_actor_options": {"num_cpus": cpus_per_replica, "num_gpus": gpus_per_replica},
        "health_check_period_s": 5.0,
    }
    if min_replicas == max_replicas:
        opts["num_replicas"] = min_replicas
    else:
        opts["autoscaling_config"] = {
            "min_replicas": min_replicas,
            "max_replicas": max_replicas,
            "target_ongoing_requests": target_sessions,
            "upscale_delay_s": 10.0,
            "downscale_delay_s": 300.0,  # sessions are long: scale down slowly
        }
    return opts


def guard_deployment(
    models: dict[str, Any],
    *,
    auth_token: str | None = None,
    limits: ServerLimits | None = None,
    name: str = "Qwen3GuardServer",
    **options: Any,
) -> Any:
    """A bound Ray Serve application serving the guard app on every replica.

    ``models``: the keyword arguments of `load_guards` (``gen_model``, ``stream_model``,
    ``device``, ``gen_url``...); each replica loads them when it starts. ``options``: see
    `deployment_options`.
    """
    serve = require("ray.serve", "ray")
    limits = limits or ServerLimits()
    opts = deployment_options(limits=limits, **options)
    models = dict(models)

    def build() -> Any:
        from .server import build_app

        replica = serve.get_replica_context().replica_id.unique_id
        return build_app(**models, auth_token=auth_token, limits=limits, replica=replica)

    @serve.deployment(name=name, **opts)
    @serve.ingress(build)
    class Qwen3GuardServer:
        """One replica: the guard app with its own models."""

    return Qwen3GuardServer.bind()  # type: ignore[attr-defined]


def run_on_ray(
    models: dict[str, Any],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    address: str | None = None,
    block: bool = False,
    app_name: str = "qwen3guard",
    auth_token: str | None = None,
    limits: ServerLimits | None = None,
    **options: Any,
) -> Any:
    """Start (or join, with ``address``) a Ray cluster, run the deployment on ``host:port``.

    Returns the app's handle; with ``block`` it serves until interrupted.
    """
    ray = require("ray", "ray")
    serve = require("ray.serve", "ray")
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False)
    serve.start(http_options={"host": host, "port": port})
    handle = serve.run(
        guard_deployment(models, auth_token=auth_token, limits=limits, **options),
        name=app_name,
        route_prefix="/",
    )
    if block:
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            serve.shutdown()
    return handle


def _cluster_gpus() -> float:
    ray = require("ray", "ray")
    if not ray.is_initialized():
        return 0.0
    return float(ray.cluster_resources().get("GPU", 0.0))
