"""``qwen3guard serve``: the guard server on one process (uvicorn) or on Ray Serve (``--ray``)."""

from __future__ import annotations

import argparse
import os
from typing import Any

__all__ = ["add_serve_parser", "run_serve"]


def add_serve_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``serve`` subcommand to ``sub`` (an argparse subparsers object)."""
    p: argparse.ArgumentParser = sub.add_parser(
        "serve",
        help="serve Gen checks (HTTP) and Stream sessions (WebSocket) to remote guards",
        description=(
            "Clients: Qwen3Guard.from_server(URL) and Qwen3StreamGuard.from_server(URL). "
            "The bearer token is read from --auth-token or $QWEN3GUARD_AUTH_TOKEN. "
            "Exit code 0, or 2 when a model cannot be loaded."
        ),
    )
    p.add_argument("--gen-model", help="Gen checkpoint (Hub id or folder), or the served name")
    p.add_argument("--stream-model", help="Stream checkpoint (Hub id or folder)")
    p.add_argument("--gen-url", help="check Gen through this vLLM (/v1) or TGI server instead")
    p.add_argument("--gen-backend", choices=("openai", "tgi"), default="openai")
    p.add_argument(
        "--gen-tokenizer", help="tokenizer of the served Gen model (default: --gen-model)"
    )
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: %(default)s)")
    p.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    p.add_argument("--auth-token", help="require 'Authorization: Bearer TOKEN'")
    p.add_argument("--max-message-bytes", type=int, default=1 << 20)
    p.add_argument("--pieces-per-second", type=float, default=1000.0, help="per connection")
    p.add_argument("--sessions-per-connection", type=int, default=4)
    p.add_argument("--max-sessions", type=int, default=256, help="per process / replica")
    p.add_argument("--max-concurrency", type=int, default=8, help="model calls at once")
    p.add_argument("--log-level", default="info")
    ray = p.add_argument_group("Ray Serve (--ray)")
    ray.add_argument("--ray", action="store_true", help="run on Ray Serve (extra: ray)")
    ray.add_argument("--ray-address", help="an existing Ray cluster (default: start a local one)")
    ray.add_argument("--min-replicas", type=int, default=1)
    ray.add_argument("--max-replicas", type=int, default=1)
    ray.add_argument(
        "--target-sessions", type=int, default=16, help="live sessions per replica to scale on"
    )
    ray.add_argument("--gpus-per-replica", type=float, default=None, help="default: 1 if any")
    p.set_defaults(func=run_serve)
    return p


def run_serve(args: argparse.Namespace) -> int:
    """Run the server until interrupted."""
    from ..serving.limits import ServerLimits

    limits = ServerLimits(
        max_message_bytes=args.max_message_bytes,
        pieces_per_second=args.pieces_per_second,
        sessions_per_connection=args.sessions_per_connection,
        max_sessions=args.max_sessions,
        max_concurrency=args.max_concurrency,
    )
    token = args.auth_token or os.environ.get("QWEN3GUARD_AUTH_TOKEN") or None
    models: dict[str, Any] = {
        "gen_model": args.gen_model,
        "stream_model": args.stream_model,
        "device": args.device,
        "gen_url": args.gen_url,
        "gen_backend": args.gen_backend,
        "gen_tokenizer": args.gen_tokenizer,
    }
    if args.ray:
        from ..serving.ray import run_on_ray

        run_on_ray(
            models,
            host=args.host,
            port=args.port,
            auth_token=token,
            limits=limits,
            address=args.ray_address,
            min_replicas=args.min_replicas,
            max_replicas=args.max_replicas,
            target_sessions=args.target_sessions,
            gpus_per_replica=args.gpus_per_replica,
            block=True,
        )
        return 0
    from ..serving.server import build_app, serve

    app = build_app(**models, auth_token=token, limits=limits)
    serve(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0
