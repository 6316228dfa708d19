"""The WiSE-FT sweep: evaluate the interpolated model at every alpha and summarise the curve."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

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
