"""The timeliness figure: how many Unsafe records fall in each bin (needs matplotlib)."""

from __future__ import annotations

import os

from ..core.deps import require
from .metrics import BINS, Timeliness

__all__ = ["plot_timeliness"]


def plot_timeliness(
    result: Timeliness, path: str | os.PathLike[str], *, title: str | None = None
) -> None:
    """Write a bar chart of ``result``'s bins (with their share of records) to ``path``.

    The format follows the file name's suffix (``.png``, ``.svg``, ``.pdf``, ...).
    """
    matplotlib = require("matplotlib", "eval")
    matplotlib.use("Agg", force=True)  # no display needed
    plt = require("matplotlib.pyplot", "eval")
    counts = [result.bins.get(b, 0) for b in BINS]
    colors = ["#4c72b0", "#55a868"] + ["#dd8452"] * 5 + ["#c44e52"]
    fig, ax = plt.subplots(figsize=(8, 4))
    try:
        bars = ax.bar(BINS, counts, color=colors)
        for bar, count in zip(bars, counts):
            share = count / result.n if result.n else 0.0
            ax.annotate(
                f"{count}\n{share:.0%}",
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=8,
            )
        ax.set_xlabel("first detection relative to the annotated unsafe span (tokens after it)")
        ax.set_ylabel("Unsafe records")
        ax.set_ylim(0, max([*counts, 1]) * 1.25)
        ax.yaxis.set_major_locator(require("matplotlib.ticker", "eval").MaxNLocator(integer=True))
        ax.set_title(
            title
            or f"Stream timeliness (n={result.n}): exact hit {result.exact_hit_rate:.1%}, "
            f"within 128 tokens {result.within_128_rate:.1%}"
        )
        fig.tight_layout()
        fig.savefig(os.fspath(path), dpi=120)
    finally:
        plt.close(fig)
