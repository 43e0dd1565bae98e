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
from ..eval.records import load_dataset_records, load_records
from ..eval.runner import (
    EvalReport,
    evaluate,
    official_rows,
    predict_gen,
    predict_stream,
    result_rows,
)

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
    p.add_argument(
        "data",
        nargs="?",
        help="JSON Lines file: message, label[, unsafe_start/end_index] (or use --dataset)",
    )
    p.add_argument(
        "--dataset",
        help="a datasets name or local dataset folder instead of DATA, e.g. Qwen/Qwen3GuardTest "
        "(needs the datasets package and --split)",
    )
    p.add_argument("--split", help="the dataset split, e.g. thinking, thinking_loc, response_loc")
    p.add_argument(
        "--data-type",
        choices=("prompt", "response"),
        help="force the mode, as the official scripts' --data_type: prompt checks the last user "
        "turn even when an assistant turn follows (default: the last message decides)",
    )
    p.add_argument(
        "--gen-mode",
        choices=("fast", "full"),
        default="fast",
        help="Gen: fast reads the level from the logits in one forward pass; full decodes the "
        "whole answer greedily, as the official eval_gen.py does (default fast)",
    )
    p.add_argument(
        "--max-new-tokens",
        type=int,
        default=128,
        help="Gen: answer budget in tokens (default 128, the official budget)",
    )
    p.add_argument(
        "--out-format",
        choices=("ours", "official"),
        default="ours",
        help="--out lines: ours (levels as names, strict/loose, timeliness) or official (the "
        "fields the official scripts write and read: pred_risk_levels as ints, "
        "pred_categories, pred_risk_prob, input_ids, split_idx_eval; Gen: guard_predict)",
    )
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
    ]
    if report.errors:
        lines.append(
            f"errors: {report.errors} record(s) could not be scored (scored as Safe, as the "
            "official scripts do; see the error rows in --out)"
        )
    lines += [
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
    if args.max_new_tokens < 1:
        raise InvalidInputError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    if (args.data is None) == (args.dataset is None):
        raise InvalidInputError("give either a DATA file or --dataset NAME --split SPLIT")
    if args.dataset is not None and not args.split:
        raise InvalidInputError("--dataset needs --split (e.g. --split thinking)")
    if args.plot:
        _check_plot_path(args.plot)
    for path, flag in ((args.out, "--out"), (args.plot, "--plot")):
        folder = os.path.dirname(os.path.abspath(path)) if path else None
        if folder is not None and not os.path.isdir(folder):
            raise InvalidInputError(f"{flag} {path}: the folder {folder} does not exist")
    records = (
        load_records(args.data)
        if args.data is not None
        else load_dataset_records(args.dataset, args.split)
    )
    model = args.model or (DEFAULT_STREAM if args.stream else DEFAULT_GEN)
    from .model_check import check_models

    check_models({"--model": model})
    progress = not args.quiet
    if args.stream:
        from ..guards.stream import Qwen3StreamGuard

        sguard = Qwen3StreamGuard.from_pretrained(model, device=args.device)
        preds = predict_stream(
            sguard, records, thinking=args.thinking, progress=progress, data_type=args.data_type
        )
    else:
        from ..guards.gen import Qwen3Guard

        with Qwen3Guard.from_pretrained(
            model,
            device=args.device,
            fast=args.gen_mode == "fast",
            max_new_tokens=args.max_new_tokens,
        ) as guard:
            preds = predict_gen(
                guard,
                records,
                batch_size=args.batch_size,
                progress=progress,
                data_type=args.data_type,
            )
    report = evaluate(records, preds, stream=args.stream, data_type=args.data_type)
    if args.out:
        rows = official_rows if args.out_format == "official" else result_rows
        with open(args.out, "w", encoding="utf-8") as fh:
            for row in rows(records, preds, stream=args.stream, data_type=args.data_type):
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    if args.plot:
        from ..eval.plot import plot_timeliness

        assert report.timeliness is not None
        plot_timeliness(report.timeliness, args.plot)
    if args.json:
        print(json.dumps({"model": model, "stream": args.stream, **report.to_dict()}))
        if report.errors:
            print(f"errors: {report.errors} record(s) could not be scored", file=sys.stderr)
    else:
        print(format_report(report, model, args.stream))
        for path, what in ((args.out, "results"), (args.plot, "plot")):
            if path:
                print(f"{what}: {path}", file=sys.stderr)
    return 0
