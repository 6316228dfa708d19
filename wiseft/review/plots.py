"""Robustness-vs-accuracy figures on logit-scaled axes, as the robustness literature draws them.

One panel per shift plus the average over shifts: reference top-1 on x, shift top-1 on y, both logit-scaled,
each run's WiSE-FT curve through its alpha grid with the zero-shot, fine-tuned and chosen-alpha models marked,
the effective-robustness baseline (standard models' linear fit in logit space) where its constants are known,
and ``y = x``. Figures are built without pyplot, so they work headless, in threads and in notebooks.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from wiseft.io.atomic import atomic_write
from wiseft.review.robustness import AVG_SHIFTS, LinearFit, logit, sigmoid

# Accuracies of exactly 0 or 100 % have infinite logits; they are drawn at this distance from the edge.
_EPS = 0.002
_COARSE_TICKS = (0.5, 1, 2, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 98, 99, 99.5)
_FINE_TICKS = (0.2, 0.5, 1, 2, 3, 5, *range(10, 91, 5), 95, 97, 98, 99, 99.5, 99.8)
_COLORS = ("tab:purple", "tab:orange", "tab:cyan", "tab:brown", "tab:pink", "tab:olive", "tab:gray", "tab:blue",
           "tab:red", "tab:green")


@dataclass
class Curve:
    """One run's sweep, as drawn.

    Attributes:
        label: Legend entry (a job's name and hyperparameters).
        rows: One row per alpha (``results.jsonl``).
        summary: The run's ``summary.json``.
    """

    label: str
    rows: Sequence[Mapping[str, float]]
    summary: Mapping[str, Any]


def panel_columns(summary: Mapping[str, Any]) -> list[str]:
    """The columns that get a panel: every shift, then ``avg_shifts`` when there are two or more shifts."""
    shifts = list(summary["columns"]["shifts"])
    return [*shifts, AVG_SHIFTS] if len(shifts) > 1 else shifts


def baselines_of(summary: Mapping[str, Any]) -> dict[str, LinearFit]:
    """The effective-robustness fits a run recorded in its summary (``baselines``), by column."""
    return {col: LinearFit(fit["w"], fit["b"], tuple(fit["over"]) if fit.get("over") else None)
            for col, fit in (summary.get("baselines") or {}).items()}


def _frac(percent: float) -> float:
    return min(max(percent / 100.0, _EPS), 1.0 - _EPS)


def _limits(values: Sequence[float]) -> tuple[float, float]:
    zs = [logit(_frac(v)) for v in values]
    lo, hi = min(zs), max(zs)
    pad = max(0.15 * (hi - lo), 0.3)
    return sigmoid(lo - pad), sigmoid(hi + pad)


def _ticks(lo: float, hi: float) -> list[float]:
    for candidates in (_COARSE_TICKS, _FINE_TICKS, tuple(range(1, 100))):
        ticks = [t / 100.0 for t in candidates if lo <= t / 100.0 <= hi]
        if len(ticks) >= 3:
            return ticks
    return ticks


def _logit_axis(axis: Any, lo: float, hi: float) -> None:
    axis.set_major_locator(FixedLocator(_ticks(lo, hi)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{100 * v:g}"))
    axis.set_minor_locator(NullLocator())


def plot_robustness(
    curves: Sequence[Curve],
    baselines: Mapping[str, LinearFit] | None = None,
    title: str | None = None,
    highlight: str | None = None,
) -> Figure:
    """Draw the WiSE-FT curves of one or more runs, one panel per shift plus the average.

    Args:
        curves: Runs to draw; they must share the reference column.
        baselines: Column -> effective-robustness fit (default: those recorded in the first run's summary).
        title: Figure title.
        highlight: Label of a curve to draw thicker (the best job of a sweep).

    Returns:
        The figure (save it with :func:`save_figure`).
    """
    if not curves:
        raise ValueError("nothing to plot: no curve")
    reference = curves[0].summary["columns"]["reference"]
    columns: list[str] = []
    for curve in curves:
        columns += [c for c in panel_columns(curve.summary) if c not in columns]
    if not columns:
        raise ValueError("nothing to plot: the runs have no shift column")
    baselines = baselines_of(curves[0].summary) if baselines is None else baselines
    ncols = min(3, len(columns))
    nrows = math.ceil(len(columns) / ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.9 * nrows + 0.9), dpi=110)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[len(columns):]:
        ax.set_visible(False)
    for ax, col in zip(axes, columns, strict=False):
        _panel(ax, col, reference, curves, baselines.get(col), highlight)

    handles = [Line2D([], [], color=_COLORS[i % len(_COLORS)], marker="o", ms=3,
                      lw=2.5 if c.label == highlight else 1.2, label=c.label) for i, c in enumerate(curves)]
    handles += [
        Line2D([], [], ls="", marker="*", ms=11, color="k", label="zero-shot (alpha=0)"),
        Line2D([], [], ls="", marker="D", ms=6, color="k", label="fine-tuned (alpha=1)"),
        Line2D([], [], ls="", marker="P", ms=9, mfc="w", color="k", label="chosen alpha (on validation)"),
        Line2D([], [], ls="--", color="0.35", label="standard models (linear fit in logit space)"),
        Line2D([], [], ls=":", color="0.6", label="y = x"),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=min(4, len(handles)), fontsize=7, frameon=False)
    fig.suptitle(title or "WiSE-FT: robustness vs. accuracy (logit axes)", fontsize=11)
    legend_rows = math.ceil(len(handles) / min(4, len(handles)))
    fig.tight_layout(rect=(0, 0.035 * legend_rows + 0.02, 1, 0.97))
    return fig


def _panel(ax: Any, col: str, reference: str, curves: Sequence[Curve], fit: LinearFit | None,
           highlight: str | None) -> None:
    xs_all, ys_all = [], []
    for curve in curves:
        for row in curve.rows:
            if col in row:
                xs_all.append(row[reference])
                ys_all.append(row[col])
    if not xs_all:
        ax.set_visible(False)
        return
    if fit is not None:  # keep the baseline in view: the gap to it is the effective robustness
        ys_all += [fit.baseline(min(xs_all)), fit.baseline(max(xs_all))]
    (x0, x1), (y0, y1) = _limits(xs_all), _limits(ys_all)
    ax.set_xscale("logit")
    ax.set_yscale("logit")
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    grid = [sigmoid(logit(x0) + (logit(x1) - logit(x0)) * i / 100) for i in range(101)]
    ax.plot(grid, grid, ls=":", color="0.6", lw=1)
    if fit is not None:
        ax.plot(grid, [_frac(fit.baseline(100.0 * x)) for x in grid], ls="--", color="0.35", lw=1.2)
    for i, curve in enumerate(curves):
        rows = [r for r in curve.rows if col in r]
        if not rows:
            continue
        color = _COLORS[i % len(_COLORS)]
        ax.plot([_frac(r[reference]) for r in rows], [_frac(r[col]) for r in rows], "-o", color=color, ms=3,
                lw=2.5 if curve.label == highlight else 1.2, zorder=3)
        for key, marker, size, face in (("zeroshot", "*", 140, color), ("finetuned", "D", 40, color),
                                        ("chosen", "P", 90, "white")):
            point = curve.summary.get(key) or {}
            if col in point:
                ax.scatter([_frac(point[reference])], [_frac(point[col])], marker=marker, s=size, color=face,
                           edgecolors=color, linewidths=1.5, zorder=4)
    _logit_axis(ax.xaxis, x0, x1)
    _logit_axis(ax.yaxis, y0, y1)
    nshifts = len(curves[0].summary["columns"]["shifts"])
    ax.set_title(f"average over {nshifts} shifts" if col == AVG_SHIFTS else col, fontsize=10)
    ax.set_xlabel(f"{reference} top-1 (%)", fontsize=8)
    ax.set_ylabel(f"{'avg. shift' if col == AVG_SHIFTS else col} top-1 (%)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.25)


def figure_png(fig: Figure) -> bytes:
    """The figure as PNG bytes (for notebooks and W&B)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def save_figure(fig: Figure, path: str | Path) -> None:
    """Write the figure as PNG, atomically."""
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
