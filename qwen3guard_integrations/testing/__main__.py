"""``python -m qwen3guard_integrations.testing DIR``: write the tiny checkpoints to DIR."""

from __future__ import annotations

import argparse
import sys
import time


def main(argv: list[str] | None = None) -> int:
    """Build (or take from the cache) both tiny checkpoints and copy them to DIR."""
    parser = argparse.ArgumentParser(
        prog="python -m qwen3guard_integrations.testing",
        description="Write tiny Qwen3Guard-Gen and -Stream checkpoints to DIR/gen and DIR/stream.",
    )
    parser.add_argument("dir", help="output folder")
    parser.add_argument("--no-cache", action="store_true", help="rebuild even when cached")
    parser.add_argument("--quiet", action="store_true", help="print only the paths")
    args = parser.parse_args(argv)

    from .build import BuildOptions, build_tiny_checkpoints

    start = time.monotonic()
    log = None if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    out = build_tiny_checkpoints(args.dir, BuildOptions(), use_cache=not args.no_cache, log=log)
    if not args.quiet:
        print(f"done in {time.monotonic() - start:.1f}s", file=sys.stderr)
    print(out.gen)
    print(out.stream)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
