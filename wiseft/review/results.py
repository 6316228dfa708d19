"""Result files of a run: ``results.csv``, ``results.jsonl``, ``summary.json`` and ``curve.png``.

The result files hold one row per (method, alpha): ``method`` first (``wiseft``: the weight-space interpolation;
``ensemble``: the output-space ensemble of the same endpoints; other methods where configured), then ``alpha`` and
the metric columns. ``summary.json`` holds the headline method's summary at the top level and every method's under
``methods``.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from wiseft.io.atomic import atomic_write_text

RESULTS_CSV = "results.csv"
RESULTS_JSONL = "results.jsonl"
SUMMARY_JSON = "summary.json"
CURVE_PNG = "curve.png"

#: The method whose rows are the run's headline (and what rows without a ``method`` field belong to).
PRIMARY = "wiseft"
#: How each method is named in figures and tables.
METHOD_LABELS = {
    "wiseft": "WiSE-FT (weight space)",
    "ensemble": "output-space ensemble",
    "fisher": "Fisher-weighted merge",
    "uniform_soup": "uniform soup (WiSE-FT from zero-shot)",
    "greedy_soup": "greedy soup (WiSE-FT from zero-shot)",
    "model_stock": "Model Stock (WiSE-FT from zero-shot)",
}

#: How each fine-tuning mode (``summary.json``'s ``finetune``) is named in comparisons across runs.
FINETUNE_LABELS = {
    "e2e": "FT",
    "linear": "LC",
    "lpft": "LP-FT",
    "flyp": "FLYP",
}

Rows = Sequence[Mapping[str, float]]


def run_method_label(summary: Mapping[str, Any], method: str = PRIMARY) -> str:
    """A run's method named with its fine-tuning mode, e.g. ``LP-FT / WiSE-FT (weight space)``."""
    label = METHOD_LABELS.get(method, method)
    finetune = summary.get("finetune")
    return f"{FINETUNE_LABELS.get(finetune, finetune)} / {label}" if finetune else label


def _flat(curves: Mapping[str, Rows]) -> list[dict[str, Any]]:
    return [{"method": method, **row} for method, rows in curves.items() for row in rows]


def csv_text(rows: Sequence[Mapping[str, Any]]) -> str:
    """``rows`` as CSV text, the columns in order of first appearance (a missing value is an empty cell)."""
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def write_rows(curves: Mapping[str, Rows], out_dir: str | Path) -> None:
    """Write every method's rows (method -> one row per alpha) to ``results.csv`` and ``results.jsonl``."""
    out_dir = Path(out_dir)
    rows = _flat(curves)
    atomic_write_text(out_dir / RESULTS_CSV, csv_text(rows))
    atomic_write_text(out_dir / RESULTS_JSONL, "".join(json.dumps(r) + "\n" for r in rows))


def write_summary(summary: Mapping[str, Any], out_dir: str | Path) -> None:
    """Write ``summary.json``."""
    atomic_write_text(Path(out_dir) / SUMMARY_JSON, json.dumps(summary, indent=2) + "\n")


def read_curves(out_dir: str | Path) -> dict[str, list[dict[str, float]]]:
    """Read ``results.jsonl`` back as method -> rows (a file without a ``method`` field is all :data:`PRIMARY`)."""
    text = (Path(out_dir) / RESULTS_JSONL).read_text()
    curves: dict[str, list[dict[str, float]]] = {}
    for line in text.splitlines():
        if line.strip():
            row = json.loads(line)
            curves.setdefault(row.pop("method", PRIMARY), []).append(row)
    return curves


def read_rows(out_dir: str | Path, method: str = PRIMARY) -> list[dict[str, float]]:
    """Read one method's rows back from ``results.jsonl`` (none if the run did not evaluate it)."""
    return read_curves(out_dir).get(method, [])


def method_curves(curves: Mapping[str, Rows], summary: Mapping[str, Any]) -> list[Any]:
    """Every method's curve of one run, ready for :func:`wiseft.review.plots.plot_robustness`."""
    from wiseft.review.plots import Curve

    methods = summary.get("methods") or {PRIMARY: summary}
    return [Curve(METHOD_LABELS.get(name, name), rows, {"columns": summary["columns"], **methods.get(name, {}),
                                                        "baselines": summary.get("baselines")})
            for name, rows in curves.items()]


def plot_curve(curves: Mapping[str, Rows], summary: Mapping[str, Any], path: str | Path) -> None:
    """Robustness vs accuracy on logit axes: one panel per shift plus the average (see :mod:`wiseft.review.plots`).

    Draws every method's curve through the alpha grid, marks the zero-shot and fine-tuned models and each method's
    chosen alpha and, where the run's summary records its constants, the effective-robustness baseline.
    """
    from wiseft.review.plots import plot_robustness, save_figure

    save_figure(plot_robustness(method_curves(curves, summary)), path)
