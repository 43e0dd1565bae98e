"""The ``qwen3guard`` console script."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ..core.errors import InvalidInputError

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(gen_model=args.gen_model, stream_model=args.stream_model, device=args.device)


def _guard(args: argparse.Namespace) -> Any:
    from ..guards.gen import Qwen3Guard

    offline = args.offline or None
    if args.backend == "local":
        return Qwen3Guard.from_pretrained(
            args.model,
            device=args.device,
            fast=not args.full,
            normalize=args.normalize,
            local_files_only=offline,
        )
    if not args.url:
        raise InvalidInputError(f"--backend {args.backend} needs --url")
    headers = _headers(args.header) if args.header else None
    if args.backend == "tgi":
        return Qwen3Guard.from_tgi(
            args.url,
            tokenizer=args.tokenizer or args.model,
            headers=headers,
            token=os.environ.get("QWEN3GUARD_API_KEY"),
            timeout=args.timeout,
            fast=not args.full,
            normalize=args.normalize,
            local_files_only=offline,
        )
    return Qwen3Guard.from_openai(
        args.url,
        model=args.model,
        tokenizer=args.tokenizer,
        api_key=os.environ.get("QWEN3GUARD_API_KEY"),
        headers=headers,
        timeout=args.timeout,
        fast=not args.full,
        normalize=args.normalize,
        local_files_only=offline,
    )


def _headers(given: list[str]) -> dict[str, str]:
    """``--header "Name: value"`` options as a dict: split at the first colon, both sides
    stripped (the value is checked by the backend and never printed)."""
    from ..core.errors import ConfigurationError

    out: dict[str, str] = {}
    for item in given:
        name, colon, value = item.partition(":")
        if not colon or not name.strip():
            shown = name.strip()[:40] if colon else "(no colon)"
            raise ConfigurationError(
                f"--header must be NAME:VALUE; got a header without a name or a colon: {shown}"
            )
        out[name.strip()] = value.strip()
    return out


def _check(args: argparse.Namespace) -> int:
    import json

    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    guard = _guard(args)
    try:
        if args.response is not None:
            verdict = guard.check_response(prompt, args.response)
        else:
            verdict = guard.check_prompt(prompt)
    finally:
        guard.close()
    blocked = guard.blocks(verdict)
    if args.json:
        print(json.dumps({**verdict.to_dict(), "blocked": blocked}, ensure_ascii=False))
    else:
        cats = ", ".join(c.value for c in verdict.categories) or "None"
        line = f"{verdict.role.value}: {verdict.level.value} (categories: {cats})"
        if verdict.refusal is not None:
            line += f", refusal: {'yes' if verdict.refusal else 'no'}"
        print(f"{line} -> {'BLOCKED' if blocked else 'allowed'} [{verdict.latency_ms or 0:.0f} ms]")
    return 1 if blocked else 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``qwen3guard``."""
    parser = argparse.ArgumentParser(prog="qwen3guard", description="Qwen3Guard safety checks.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="a guarded LCEL chain, a stream stopped mid-answer and a screened agent tool call",
        description="Exit code 0, or 2 when a model cannot be loaded.",
    )
    demo.add_argument(
        "--gen-model",
        default="Qwen/Qwen3Guard-Gen-0.6B",
        help="Gen checkpoint: Hub id or local folder (default: %(default)s)",
    )
    demo.add_argument(
        "--stream-model",
        default="Qwen/Qwen3Guard-Stream-0.6B",
        help="Stream checkpoint: Hub id or local folder (default: %(default)s)",
    )
    demo.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    demo.set_defaults(func=_demo)
    check = sub.add_parser(
        "check",
        help="check one prompt (or a response) with a Gen model",
        description="Exit code: 0 allowed, 1 blocked, 2 error.",
    )
    check.add_argument("prompt", help="the prompt text, or - to read it from stdin")
    check.add_argument(
        "--model",
        default="Qwen/Qwen3Guard-Gen-0.6B",
        help="Gen checkpoint (Hub id or local path); with --backend openai: the served model name",
    )
    check.add_argument("--response", help="check this response to the prompt instead")
    check.add_argument("--json", action="store_true", help="print the verdict as JSON")
    check.add_argument("--full", action="store_true", help="decode the whole answer (no fast mode)")
    check.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    check.add_argument("--offline", action="store_true", help="never download the model")
    check.add_argument(
        "--backend",
        choices=("local", "tgi", "openai"),
        default="local",
        help="run the model here (local), or call a TGI / OpenAI-compatible server at --url",
    )
    check.add_argument("--url", help="server URL (TGI base URL, or the OpenAI base URL .../v1)")
    check.add_argument(
        "--tokenizer",
        help="tokenizer of the served model (Hub id or path); default: --model",
    )
    check.add_argument(
        "--header",
        action="append",
        metavar="NAME:VALUE",
        help="extra HTTP header (repeatable); the API key is read from $QWEN3GUARD_API_KEY",
    )
    check.add_argument("--timeout", type=float, default=30.0, help="request timeout in seconds")
    check.add_argument(
        "--normalize",
        choices=("none", "format", "nfkc"),
        default="none",
        help="take Unicode disguises off the text the model reads (zero-width, full-width...)",
    )
    check.set_defaults(func=_check)
    from .eval import add_eval_parser

    add_eval_parser(sub)
    from .serve import add_serve_parser

    add_serve_parser(sub)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the CLI's last line of defence: one readable line, exit 2
        from ..core import Qwen3GuardError

        if not isinstance(exc, (Qwen3GuardError, OSError)):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
