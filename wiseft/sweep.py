"""The WiSE-FT sweep: evaluate the interpolated model at every alpha and summarise the curve."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader

from wiseft.evaluate import evaluate
from wiseft.interpolate import StateDict, interpolate_into

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
        out["avg_shifts"] = sum(row[c] for c in columns.shifts) / len(columns.shifts)
        out["avg_ref_shifts"] = (row[columns.reference] + out["avg_shifts"]) / 2
    return out


def sweep_alphas(alphas: Sequence[float]) -> list[float]:
    """The grid to evaluate: the configured alphas plus both endpoints, which the summary always reports."""
    return sorted({0.0, 1.0, *(float(a) for a in alphas)})


def run_sweep(
    model: torch.nn.Module,
    theta_0: StateDict,
    theta_1: StateDict,
    alphas: Sequence[float],
    loaders: Mapping[str, DataLoader],
    columns: Columns,
    device: torch.device | str = "cpu",
    on_row: Callable[[Row], None] | None = None,
    done: Mapping[float, Row] | None = None,
) -> list[Row]:
    """Evaluate ``(1 - alpha) * theta_0 + alpha * theta_1`` on every loader for every alpha.

    ``model``'s weights are overwritten; the caller restores them.

    Args:
        model: Module whose state dict has the keys of ``theta_0``.
        theta_0: Zero-shot weights.
        theta_1: Fine-tuned weights.
        alphas: Mixing coefficients (evaluated as :func:`sweep_alphas`).
        loaders: Column name -> loader, for every column of ``columns``.
        columns: Roles of the columns.
        device: Where to evaluate.
        on_row: Called with each newly evaluated row (progress reporting, resumable sweeps).
        done: Rows already evaluated (by alpha), returned as they are instead of being evaluated again.

    Returns:
        One row per alpha: ``alpha``, each dataset's top-1 and the averages.
    """
    rows = []
    for alpha in sweep_alphas(alphas):
        if done and alpha in done:
            rows.append(dict(done[alpha]))
            continue
        interpolate_into(model, theta_0, theta_1, alpha)
        accuracies = evaluate(model, {c: loaders[c] for c in columns.all}, device)
        row = add_averages({"alpha": alpha, **accuracies}, columns)
        rows.append(row)
        if on_row is not None:
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
