"""Result files of a sweep: ``results.csv``, ``results.jsonl``, ``summary.json`` and ``curve.png``."""

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


def write_rows(rows: Sequence[Mapping[str, float]], out_dir: str | Path) -> None:
    """Write one row per alpha to ``results.csv`` and ``results.jsonl``."""
    out_dir = Path(out_dir)
    fields = list(rows[0])
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out_dir / RESULTS_CSV, buf.getvalue())
    atomic_write_text(out_dir / RESULTS_JSONL, "".join(json.dumps(dict(r)) + "\n" for r in rows))


def write_summary(summary: Mapping[str, Any], out_dir: str | Path) -> None:
    """Write ``summary.json``."""
    atomic_write_text(Path(out_dir) / SUMMARY_JSON, json.dumps(summary, indent=2) + "\n")


def read_rows(out_dir: str | Path) -> list[dict[str, float]]:
    """Read ``results.jsonl`` back."""
    text = (Path(out_dir) / RESULTS_JSONL).read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def plot_curve(rows: Sequence[Mapping[str, float]], summary: Mapping[str, Any], path: str | Path) -> None:
    """Robustness vs accuracy on logit axes: one panel per shift plus the average (see :mod:`wiseft.review.plots`).

    Marks the zero-shot model, the fine-tuned model, the WiSE-FT curve through the alpha grid, the chosen alpha
    and, where the run's summary records its constants, the effective-robustness baseline.
    """
    from wiseft.review.plots import Curve, plot_robustness, save_figure

    save_figure(plot_robustness([Curve("WiSE-FT", rows, summary)]), path)
