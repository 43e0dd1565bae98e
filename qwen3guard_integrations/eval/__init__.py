"""Evaluation on the Qwen3GuardTest record format (``qwen3guard eval``).

- `metrics`: the official metrics, pure: the consecutive decision rule, strict/loose
  Unsafe-class F1 / precision / recall, timeliness bins, exact-hit and within-128-tokens rates.
- `records`: reading and validating JSON Lines records.
- `runner`: running a Gen or Stream guard over the records, and scoring.
- `plot`: the timeliness figure (needs the ``eval`` extra: matplotlib).

The runner's progress bar needs ``tqdm`` (the ``eval`` extra). The metrics need nothing.
"""

from .metrics import (
    BINS,
    BinaryScores,
    ClassificationMetrics,
    Timeliness,
    classification_metrics,
    consecutive_decision,
    detection_delay,
    loose,
    strict,
    timeliness,
    timeliness_bin,
    unsafe_scores,
)
from .records import EvalRecord, load_records
from .runner import EvalReport, Prediction, evaluate, predict_gen, predict_stream, result_rows

__all__ = [
    "BINS",
    "BinaryScores",
    "ClassificationMetrics",
    "EvalRecord",
    "EvalReport",
    "Prediction",
    "Timeliness",
    "classification_metrics",
    "consecutive_decision",
    "detection_delay",
    "evaluate",
    "load_records",
    "loose",
    "predict_gen",
    "predict_stream",
    "result_rows",
    "strict",
    "timeliness",
    "timeliness_bin",
    "unsafe_scores",
]
