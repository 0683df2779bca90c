"""The accuracy-robustness picture: clean vs worst-case robust accuracy of the fixed-α curve and other points
(matplotlib is optional: ``robustmix[plot]``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from .._utils.optional import require
from .accuracy import Score

__all__ = ["plot_alpha_sweep"]

_MARKERS = ("*", "D", "P", "X", "s", "^")


def plot_alpha_sweep(
    points: Sequence[Score],
    adaptive_point: Score | Sequence[Score] | None,
    path: str | Path,
    title: str | None = None,
) -> Path:
    """Write a PNG of clean vs worst-case robust accuracy: the fixed-α curve, and each other method (the
    adaptive mixture, a calibrated nonlinear mix, ...) as a separately marked point (it earns its place when
    it lies above the curve). Uses the Agg canvas only (no global backend change). Needs matplotlib
    (``robustmix[plot]``)."""
    FigureCanvasAgg = require("matplotlib.backends.backend_agg", "plot", "plotting").FigureCanvasAgg
    Figure = require("matplotlib.figure", "plot", "plotting").Figure
    if not points:
        raise ValueError("plot_alpha_sweep needs at least one fixed-α point")
    fig = Figure(figsize=(6, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ordered = sorted(points, key=lambda p: math.inf if p.alpha is None else p.alpha)
    ax.plot([100 * p.clean for p in ordered], [100 * p.robust for p in ordered], "o-", color="tab:blue",
            label="fixed α (eq. 5)")
    for p in ordered:
        label = p.name if p.alpha is None else ("α=∞" if math.isinf(p.alpha) else f"α={p.alpha:g}")
        ax.annotate(label, (100 * p.clean, 100 * p.robust), textcoords="offset points", xytext=(4, 4), fontsize=7)
    marked = [] if adaptive_point is None else (
        [adaptive_point] if isinstance(adaptive_point, Score) else list(adaptive_point)
    )
    for k, p in enumerate(marked):
        ax.plot([100 * p.clean], [100 * p.robust], _MARKERS[k % len(_MARKERS)], color=f"C{(k + 3) % 10}",
                markersize=13, label=p.name)
    ax.set_xlabel("clean accuracy (%)")
    ax.set_ylabel("worst-case robust accuracy (%)")
    ax.set_title(title or "accuracy-robustness trade-off")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path
