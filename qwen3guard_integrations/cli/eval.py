"""``qwen3guard eval``: score a Gen or Stream model on Qwen3GuardTest-format records."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from ..core.deps import require
from ..core.errors import InvalidInputError
from ..eval.metrics import BINS
from ..eval.records import load_records
from ..eval.runner import EvalReport, evaluate, predict_gen, predict_stream, result_rows

__all__ = ["add_eval_parser", "format_report", "run_eval"]

DEFAULT_GEN = "Qwen/Qwen3Guard-Gen-0.6B"
DEFAULT_STREAM = "Qwen/Qwen3Guard-Stream-0.6B"


def add_eval_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``eval`` subcommand to ``sub`` (an argparse subparsers object)."""
    p = sub.add_parser(
        "eval",
        help="score a Gen or Stream model on Qwen3GuardTest-format JSON Lines",
        description=(
            "Strict/loose Unsafe F1, precision and recall; with --stream also the timeliness of "
            "the first detection against unsafe_start_index/unsafe_end_index, as the official "
            "Qwen3Guard eval script computes them. Exit code 0, or 2 on an error."
        ),
    )
    p.add_argument("data", help="JSON Lines file: message, label[, unsafe_start/end_index]")
    p.add_argument(
        "--model",
        help=f"checkpoint (Hub id or folder); default {DEFAULT_GEN}, or {DEFAULT_STREAM} with --stream",
    )
    p.add_argument("--stream", action="store_true", help="the model is a Stream checkpoint")
    p.add_argument("--out", help="write each record with its prediction to this JSON Lines file")
    p.add_argument("--plot", help="write the timeliness figure here (needs --stream), e.g. t.png")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    p.add_argument("--batch-size", type=int, default=8, help="Gen conversations per batch")
    p.add_argument(
        "--thinking",
        action="store_true",
        help="Stream: moderate the response from its <think> block on (the thinking splits)",
    )
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_eval)
    return p


def _pct(x: float) -> str:
    return f"{100 * x:6.2f}"


def format_report(report: EvalReport, model: str, stream: bool) -> str:
    """The human-readable summary printed by ``qwen3guard eval``."""
    labels = ", ".join(f"{n} {k}" for k, n in sorted(report.labels.items()))
    lines = [
        f"model: {model} ({'Stream' if stream else 'Gen'})",
        f"records: {report.n} ({labels})",
        "",
        f"{'Unsafe class':<12} {'F1':>7} {'prec.':>7} {'recall':>7}   tp  fp  fn  tn",
    ]
    for name, s in (
        ("strict", report.classification.strict),
        ("loose", report.classification.loose),
    ):
        lines.append(
            f"{name:<12} {_pct(s.f1)} {_pct(s.precision)} {_pct(s.recall)}  "
            f"{s.tp:3d} {s.fp:3d} {s.fn:3d} {s.tn:3d}"
        )
    t = report.timeliness
    if t is not None:
        lines += ["", f"timeliness over {t.n} Unsafe responses with an annotated span:"]
        lines.append("  " + " ".join(f"{b:>8}" for b in BINS))
        lines.append("  " + " ".join(f"{t.bins[b]:>8}" for b in BINS))
        lines.append(f"exact hit rate: {_pct(t.exact_hit_rate).strip()}%")
        lines.append(
            f"stopped within 128 tokens of the span's end: {_pct(t.within_128_rate).strip()}%"
        )
    return "\n".join(lines)


def _check_plot_path(path: str) -> None:
    """Refuse a ``--plot`` file matplotlib cannot write, before the (long) run instead of after.

    Matplotlib picks the format from the suffix and only complains when saving; without a
    suffix it would write ``path + ".png"`` while we report ``path``.
    """
    canvas = require("matplotlib.backend_bases", "eval").FigureCanvasBase
    formats = sorted(canvas.get_supported_filetypes())
    suffix = os.path.splitext(path)[1][1:].lower()
    if suffix not in formats:
        raise InvalidInputError(
            f"--plot {path}: the file name must end in one of "
            + ", ".join(f".{f}" for f in formats)
        )


def run_eval(args: argparse.Namespace) -> int:
    """Run ``qwen3guard eval`` for parsed ``args``; returns the exit code."""
    if args.plot and not args.stream:
        raise InvalidInputError("--plot draws Stream timeliness: add --stream")
    if args.batch_size < 1:
        raise InvalidInputError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.plot:
        _check_plot_path(args.plot)
    for path, flag in ((args.out, "--out"), (args.plot, "--plot")):
        folder = os.path.dirname(os.path.abspath(path)) if path else None
        if folder is not None and not os.path.isdir(folder):
            raise InvalidInputError(f"{flag} {path}: the folder {folder} does not exist")
    records = load_records(args.data)
    model = args.model or (DEFAULT_STREAM if args.stream else DEFAULT_GEN)
    from .model_check import check_models

    check_models({"--model": model})
    progress = not args.quiet
    if args.stream:
        from ..guards.stream import Qwen3StreamGuard

        sguard = Qwen3StreamGuard.from_pretrained(model, device=args.device)
        preds = predict_stream(sguard, records, thinking=args.thinking, progress=progress)
    else:
        from ..guards.gen import Qwen3Guard

        with Qwen3Guard.from_pretrained(model, device=args.device) as guard:
            preds = predict_gen(guard, records, batch_size=args.batch_size, progress=progress)
    report = evaluate(records, preds, stream=args.stream)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            for row in result_rows(records, preds, stream=args.stream):
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    if args.plot:
        from ..eval.plot import plot_timeliness

        assert report.timeliness is not None
        plot_timeliness(report.timeliness, args.plot)
    if args.json:
        print(json.dumps({"model": model, "stream": args.stream, **report.to_dict()}))
    else:
        print(format_report(report, model, args.stream))
        for path, what in ((args.out, "results"), (args.plot, "plot")):
            if path:
                print(f"{what}: {path}", file=sys.stderr)
    return 0
