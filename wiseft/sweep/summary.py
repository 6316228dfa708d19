"""Result rows of a sweep, their averages, and the summary: the chosen alpha and every column's optimal alpha."""

from __future__ import annotations

import math
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


def selection_tolerance(best: float, num_examples: int, within_se: float) -> float:
    """How far under the best held-out accuracy (%) an alpha may score and still count as tied with it.

    ``within_se`` binomial standard errors of the best accuracy, ``sqrt(p (1 - p) / n)``: the one-standard-error
    rule of model selection, with the grid point closest to the zero-shot model as the "simplest" model.

    Args:
        best: The best accuracy on the selection column, in %.
        num_examples: Examples in the selection column.
        within_se: Standard errors allowed; 0 gives 0 (plain argmax).
    """
    if within_se == 0:
        return 0.0
    if num_examples <= 0:
        raise ValueError(f"the selection column has no example to estimate its standard error from ({num_examples})")
    p = best / 100.0
    return 100.0 * within_se * math.sqrt(p * (1.0 - p) / num_examples)


def summarize(rows: Sequence[Row], columns: Columns, select_on: str = "val", within_se: float = 0.0,
              num_examples: int | None = None) -> dict:
    """Pick alpha and collect the headline numbers.

    Args:
        rows: One method's rows (must contain alpha 0 and 1).
        columns: Column roles.
        select_on: ``val`` chooses alpha by held-out reference accuracy (never by shift accuracy);
            ``reference`` by the reported reference column.
        within_se: 0 chooses the alpha with the best selection accuracy; above 0, the smallest alpha whose
            accuracy is within that many standard errors of the best (:func:`selection_tolerance`).
        num_examples: Examples in the selection column; needed when ``within_se > 0``.

    Returns:
        ``zeroshot``, ``finetuned`` and ``chosen`` rows, ``chosen_alpha``, ``selected_on``, ``selection`` (the rule,
        the best alpha and score, the tolerance), and for every column the paper's per-column ``optimal_alpha``
        (the lowest value for calibration columns) and its value in ``optimal``.
    """
    by_alpha = {row["alpha"]: row for row in rows}
    select_col = columns.val if select_on == "val" else columns.reference
    # Ties go to the smaller alpha: the choice closest to the zero-shot model among equals.
    best = max(rows, key=lambda r: (r[select_col], -r["alpha"]))
    if within_se > 0 and num_examples is None:
        raise ValueError("summarize: within_se > 0 needs the number of examples of the selection column")
    tolerance = selection_tolerance(best[select_col], num_examples or 0, within_se)
    # 1e-9: accuracies are ratios of integers printed to 9 places; equal scores must stay ties.
    chosen = min((r for r in rows if r[select_col] >= best[select_col] - tolerance - 1e-9), key=lambda r: r["alpha"])
    metric_cols = [c for c in rows[0] if c != "alpha"]
    optimal_alpha = {c: (min(rows, key=lambda r, c=c: (r[c], r["alpha"])) if lower_is_better(c)
                         else max(rows, key=lambda r, c=c: (r[c], -r["alpha"])))["alpha"] for c in metric_cols}
    return {
        "zeroshot": by_alpha[0.0],
        "finetuned": by_alpha[1.0],
        "chosen": chosen,
        "chosen_alpha": chosen["alpha"],
        "selected_on": select_col,
        "selection": {"within_se": within_se, "num_examples": num_examples, "best_alpha": best["alpha"],
                      "best": best[select_col], "tolerance": round(tolerance, 9)},
        "optimal_alpha": optimal_alpha,
        "optimal": {c: by_alpha[a][c] for c, a in optimal_alpha.items()},
        "columns": {"val": columns.val, "reference": columns.reference, "shifts": list(columns.shifts)},
    }


def summarize_methods(curves: Mapping[str, Sequence[Row]], columns: Columns, select_on: str = "val",
                      primary: str = "wiseft", within_se: float = 0.0,
                      num_examples: Mapping[str, int] | None = None) -> dict:
    """The run's summary: ``primary``'s :func:`summarize` at the top level, every method's under ``methods``.

    Every method's alpha is chosen the same way, on the same held-out column. ``num_examples`` (examples per
    dataset column) is stored as ``num_examples`` and gives the selection column's size to ``within_se``.
    """
    select_col = columns.val if select_on == "val" else columns.reference
    n = None if num_examples is None else num_examples[select_col]
    summary = summarize(curves[primary], columns, select_on, within_se, n)
    summary["method"] = primary
    if num_examples is not None:
        summary["num_examples"] = dict(num_examples)
    summary["methods"] = {}
    for name, rows in curves.items():
        summary["methods"][name] = summarize(rows, columns, select_on, within_se, n)
    return summary
