"""The WiSE-FT sweep: evaluate the interpolated model at every alpha and summarise the curve."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader

from wiseft.distributed import Reduce, no_reduce
from wiseft.interpolate import StateDict
from wiseft.sweep_engine import DEFAULT_CACHE_BYTES, weight_sweep_counts

Row = dict[str, float]


@dataclass(frozen=True)
class Columns:
    """Which result columns play which role.

    Attributes:
        val: Held-out reference data; alpha is chosen on it.
        reference: The reported reference accuracy.
        shifts: Distribution-shift columns, averaged into ``avg_shifts``.
    """

    val: str
    reference: str
    shifts: tuple[str, ...]

    @property
    def all(self) -> tuple[str, ...]:
        """Every dataset column in order."""
        return (self.val, self.reference, *self.shifts)


def add_averages(row: Mapping[str, float], columns: Columns) -> Row:
    """Return ``row`` with ``avg_shifts`` (mean over shifts) and ``avg_ref_shifts`` (mean of reference and that)."""
    out = dict(row)
    if columns.shifts:
        # Rounded far below any accuracy resolution so the files read 51.74, not 51.739999999999995.
        out["avg_shifts"] = round(sum(row[c] for c in columns.shifts) / len(columns.shifts), 9)
        out["avg_ref_shifts"] = round((row[columns.reference] + out["avg_shifts"]) / 2, 9)
    return out


def sweep_alphas(alphas: Sequence[float]) -> list[float]:
    """The grid to evaluate: the configured alphas plus both endpoints, which the summary always reports."""
    return sorted({0.0, 1.0, *(float(a) for a in alphas)})


def rows_from_counts(grid: Sequence[float], counts: torch.Tensor, columns: Columns) -> list[Row]:
    """Turn ``(len(grid), len(columns.all), 2)`` ``(correct, total)`` counts into result rows.

    Raises:
        ValueError: If a dataset has no example (naming it).
    """
    totals = counts[0, :, 1].tolist()
    for name, total in zip(columns.all, totals, strict=True):
        if total == 0:
            raise ValueError(f"cannot evaluate on an empty dataset ('{name}')")
    rows = []
    for i, alpha in enumerate(grid):
        accuracies = {name: 100.0 * int(counts[i, j, 0]) / int(counts[i, j, 1]) for j, name in enumerate(columns.all)}
        rows.append(add_averages({"alpha": float(alpha), **accuracies}, columns))
    return rows


def run_sweep(
    model: torch.nn.Module,
    theta_0: StateDict,
    theta_1: StateDict,
    alphas: Sequence[float],
    loaders: Mapping[str, DataLoader],
    columns: Columns,
    device: torch.device | str = "cpu",
    on_row: Callable[[Row], None] | None = None,
    *,
    reduce: Reduce = no_reduce,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
    forward_context: Callable[[], AbstractContextManager] = contextlib.nullcontext,
) -> list[Row]:
    """Evaluate ``(1 - alpha) * theta_0 + alpha * theta_1`` on every loader for every alpha.

    Each image is decoded once for the whole grid (see :mod:`wiseft.sweep_engine`). ``model``'s weights are
    overwritten; the caller restores them. Under several processes, each passes its own unpadded shard of every
    dataset and ``reduce`` sums the integer counts, so the accuracies are exactly those of one process.

    Args:
        model: Module whose state dict has the keys of ``theta_0``.
        theta_0: Zero-shot weights.
        theta_1: Fine-tuned weights.
        alphas: Mixing coefficients (evaluated as :func:`sweep_alphas`).
        loaders: Column name -> loader, for every column of ``columns``.
        columns: Roles of the columns.
        device: Where to evaluate.
        on_row: Called with each finished row (progress reporting).
        reduce: Sums a counts tensor over processes.
        cache_bytes: Bound on the decoded images held at once.
        forward_context: Entered around forward passes (e.g. the trainer's autocast).

    Returns:
        One row per alpha: ``alpha``, each dataset's top-1 and the averages.
    """
    grid = sweep_alphas(alphas)
    counts = weight_sweep_counts(model, theta_0, theta_1, grid, [loaders[c] for c in columns.all], device,
                                 cache_bytes=cache_bytes, forward_context=forward_context)
    rows = rows_from_counts(grid, reduce(counts.to(device)).cpu(), columns)
    if on_row is not None:
        for row in rows:
            on_row(row)
    return rows


def summarize(rows: Sequence[Row], columns: Columns, select_on: str = "val") -> dict:
    """Pick alpha and collect the headline numbers.

    Args:
        rows: Output of :func:`run_sweep` (must contain alpha 0 and 1).
        columns: Column roles.
        select_on: ``val`` chooses alpha by held-out reference accuracy (never by shift accuracy);
            ``reference`` by the reported reference column.

    Returns:
        ``zeroshot``, ``finetuned`` and ``chosen`` rows, ``chosen_alpha``, ``selected_on``, and for every column
        the paper's per-column ``optimal_alpha`` and its value in ``optimal``.
    """
    by_alpha = {row["alpha"]: row for row in rows}
    select_col = columns.val if select_on == "val" else columns.reference
    # Ties go to the smaller alpha: the choice closest to the zero-shot model among equals.
    chosen = max(rows, key=lambda r: (r[select_col], -r["alpha"]))
    metric_cols = [c for c in rows[0] if c != "alpha"]
    optimal_alpha = {c: max(rows, key=lambda r, c=c: (r[c], -r["alpha"]))["alpha"] for c in metric_cols}
    return {
        "zeroshot": by_alpha[0.0],
        "finetuned": by_alpha[1.0],
        "chosen": chosen,
        "chosen_alpha": chosen["alpha"],
        "selected_on": select_col,
        "optimal_alpha": optimal_alpha,
        "optimal": {c: by_alpha[a][c] for c, a in optimal_alpha.items()},
        "columns": {"val": columns.val, "reference": columns.reference, "shifts": list(columns.shifts)},
    }
