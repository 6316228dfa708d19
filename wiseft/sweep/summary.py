"""Result rows of a sweep, their averages, and the summary: the chosen alpha and every column's optimal alpha."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from wiseft.sweep.stats import CORRECT, TOTAL, bins_of, ece, nll

#: One alpha's results: ``alpha`` and metric columns.
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


def rows_from_stats(grid: Sequence[float], stats: torch.Tensor, columns: Columns,
                    methods: Sequence[str] = ("wiseft",)) -> dict[str, list[Row]]:
    """Turn ``(methods, len(grid), len(columns.all), width)`` statistics (:mod:`wiseft.sweep.stats`) into rows.

    Each row holds ``alpha``, every dataset's top-1 (%), ``avg_shifts`` and ``avg_ref_shifts``; with calibration
    statistics also ``ece_<dataset>`` (%), ``nll_<dataset>`` (nats) and their averages over the shifts.

    Raises:
        ValueError: If a dataset has no example (naming it).
    """
    if stats.ndim == 3:  # one method
        stats = stats[None]
    for name, total in zip(columns.all, stats[0, 0, :, TOTAL].tolist(), strict=True):
        if total == 0:
            raise ValueError(f"cannot evaluate on an empty dataset ('{name}')")
    calibrated = bins_of(stats) > 0
    ece_values, nll_values = ece(stats).tolist(), nll(stats).tolist()
    curves: dict[str, list[Row]] = {}
    for m, method in enumerate(methods):
        rows = []
        for i, alpha in enumerate(grid):
            counts = stats[m, i]
            accuracies = {name: 100.0 * int(counts[j, CORRECT]) / int(counts[j, TOTAL])
                          for j, name in enumerate(columns.all)}
            row = add_averages({"alpha": float(alpha), **accuracies}, columns)
            if calibrated:
                for prefix, values in (("ece", ece_values[m][i]), ("nll", nll_values[m][i])):
                    metric = {name: round(values[j], 9) for j, name in enumerate(columns.all)}
                    row.update({f"{prefix}_{name}": v for name, v in metric.items()})
                    if columns.shifts:
                        row[f"{prefix}_avg_shifts"] = round(sum(metric[c] for c in columns.shifts)
                                                            / len(columns.shifts), 9)
            rows.append(row)
        curves[method] = rows
    return curves


def lower_is_better(column: str) -> bool:
    """Calibration error and NLL are minimised; accuracies and effective robustness maximised."""
    return column.startswith(("ece_", "nll_"))


def summarize(rows: Sequence[Row], columns: Columns, select_on: str = "val") -> dict:
    """Pick alpha and collect the headline numbers.

    Args:
        rows: One method's rows (must contain alpha 0 and 1).
        columns: Column roles.
        select_on: ``val`` chooses alpha by held-out reference accuracy (never by shift accuracy);
            ``reference`` by the reported reference column.

    Returns:
        ``zeroshot``, ``finetuned`` and ``chosen`` rows, ``chosen_alpha``, ``selected_on``, and for every column
        the paper's per-column ``optimal_alpha`` (the lowest value for calibration columns) and its value in
        ``optimal``.
    """
    by_alpha = {row["alpha"]: row for row in rows}
    select_col = columns.val if select_on == "val" else columns.reference
    # Ties go to the smaller alpha: the choice closest to the zero-shot model among equals.
    chosen = max(rows, key=lambda r: (r[select_col], -r["alpha"]))
    metric_cols = [c for c in rows[0] if c != "alpha"]
    optimal_alpha = {c: (min(rows, key=lambda r, c=c: (r[c], r["alpha"])) if lower_is_better(c)
                         else max(rows, key=lambda r, c=c: (r[c], -r["alpha"])))["alpha"] for c in metric_cols}
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


def summarize_methods(curves: Mapping[str, Sequence[Row]], columns: Columns, select_on: str = "val",
                      primary: str = "wiseft") -> dict:
    """The run's summary: ``primary``'s :func:`summarize` at the top level, every method's under ``methods``.

    Every method's alpha is chosen the same way, on the same held-out column.
    """
    summary = summarize(curves[primary], columns, select_on)
    summary["method"] = primary
    summary["methods"] = {}
    for name, rows in curves.items():
        summary["methods"][name] = summarize(rows, columns, select_on)
    return summary
