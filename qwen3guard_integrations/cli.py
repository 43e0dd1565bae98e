"""The ``qwen3guard`` console script."""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(gen_model=args.gen_model, stream_model=args.stream_model)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``qwen3guard``."""
    parser = argparse.ArgumentParser(prog="qwen3guard", description="Qwen3Guard safety checks.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the guard models over a few built-in examples")
    demo.add_argument(
        "--gen-model", help="Gen checkpoint (path or Hub id); default: tiny test model"
    )
    demo.add_argument(
        "--stream-model", help="Stream checkpoint (path or Hub id); default: tiny test model"
    )
    demo.set_defaults(func=_demo)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the CLI's last line of defence: one readable line, exit 2
        from .core import Qwen3GuardError

        if not isinstance(exc, (Qwen3GuardError, OSError)):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
