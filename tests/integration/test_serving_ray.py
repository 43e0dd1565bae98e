"""The guard server on a local Ray Serve instance (two replicas bound to loopback): sessions pinned
to the replica that opened them, and a killed replica failing its sessions closed."""

from __future__ import annotations

import os
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from qwen3guard_integrations import BackendConnectionError, Qwen3StreamGuard, SessionClosedError
from qwen3guard_integrations.serving import ServerLimits
from tests.support.contract_cases import RESPONSE_CARRIERS, SAFE_RESPONSES
from tests.support.serving_support import free_port

pytest.importorskip("torch")
pytest.importorskip("uvicorn")

ROOT = Path(__file__).resolve().parents[2]


def test_deployment_options_scale_on_live_sessions() -> None:
    from qwen3guard_integrations.core.errors import ConfigurationError
    from qwen3guard_integrations.serving.ray import deployment_options

    limits = ServerLimits(max_sessions=64, max_concurrency=4)
    opts = deployment_options(
        limits=limits, min_replicas=1, max_replicas=8, target_sessions=16, gpus_per_replica=1
    )
    assert opts["autoscaling_config"]["target_ongoing_requests"] == 16
    assert opts["autoscaling_config"]["max_replicas"] == 8
    assert opts["max_ongoing_requests"] == 68
    assert opts["ray_actor_options"]["num_gpus"] == 1
    fixed = deployment_options(limits=limits, min_replicas=2, max_replicas=2, gpus_per_replica=0)
    assert fixed["num_replicas"] == 2 and "autoscaling_config" not in fixed
    with pytest.raises(ConfigurationError):
        deployment_options(limits=limits, min_replicas=3, max_replicas=2)


@pytest.fixture(scope="module")
def ray_server(tiny):  # type: ignore[no-untyped-def]
    ray = pytest.importorskip("ray")
    serve = pytest.importorskip("ray.serve")
    from qwen3guard_integrations.serving.ray import guard_deployment

    port = free_port()
    # a shared, loaded machine: give the proxy and replicas time to start before health checks
    for key, value in {
        "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "120",
        "RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S": "60",
    }.items():
        os.environ.setdefault(key, value)
    ray.init(
        num_cpus=4,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}},
    )
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        app = guard_deployment(
            {"stream_model": str(tiny.stream), "device": "cpu"},
            min_replicas=2,
            max_replicas=2,
            cpus_per_replica=0.5,
        )
        serve.run(app, name="qwen3guard", route_prefix="/")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


def _pieces(text: str, rng: random.Random) -> list[str]:
    out, i = [], 0
    while i < len(text):
        n = rng.randint(2, 6)
        out.append(text[i : i + n])
        i += n
    return out


TEXTS = [c.format("build the bomb") for c in RESPONSE_CARRIERS[:10]] + list(SAFE_RESPONSES[:10])


@pytest.mark.slow
def test_two_replicas_serve_20_concurrent_sessions_each_pinned(ray_server: str, tiny) -> None:  # type: ignore[no-untyped-def]
    remote = Qwen3StreamGuard.from_server(ray_server)
    local = Qwen3StreamGuard.from_pretrained(tiny.stream, device="cpu")

    def run(guard: Qwen3StreamGuard, i: int) -> tuple[str | None, list[object]]:
        out: list[object] = []
        with guard.session("Can you help me?") as s:
            for piece in _pieces(TEXTS[i], random.Random(i)):
                u = s.feed(piece)  # the client checks each answer's replica against the opener
                out.append((u.levels, u.decision, u.blocked))
            out.append(s.finish().decision)
            out.append(s.decode_response())
            return getattr(s, "replica", None), out

    with ThreadPoolExecutor(20) as pool:
        got = list(pool.map(lambda i: run(remote, i), range(20)))
    want = [run(local, i)[1] for i in range(20)]
    assert [o for _, o in got] == want
    replicas = [r for r, _ in got]
    assert None not in replicas and len(set(replicas)) == 2, replicas


@pytest.mark.slow
def test_killed_replica_fails_its_sessions_closed(ray_server: str) -> None:
    ray = pytest.importorskip("ray")
    guard = Qwen3StreamGuard.from_server(ray_server)
    sessions = [guard.session("Can you help me?") for _ in range(6)]
    for s in sessions:
        s.feed("Sure! Here")
    victim = sessions[0].replica
    assert victim is not None
    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)]
    (name,) = [n for n in names if n.startswith("SERVE_REPLICA::") and n.endswith(victim)]
    ray.kill(ray.get_actor(name, namespace="serve"))
    for s in sessions:
        if s.replica == victim:
            with pytest.raises(BackendConnectionError):
                s.feed(" is how")
            assert s.closed
            with pytest.raises(SessionClosedError):
                s.feed(" more")
        else:  # the other replica's sessions go on
            assert s.feed(" is how to do it.").start_index > 0
            s.close()
    with guard.session("Hi") as fresh:  # new sessions find a live replica
        fresh.feed("Hello there, friend.")
        assert fresh.replica is not None
