"""Result files of a sweep: ``results.csv``, ``results.jsonl``, ``summary.json`` and ``curve.png``."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from wiseft.io import atomic_write, atomic_write_text

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
    """Robustness vs accuracy: reference accuracy on x, average shift accuracy on y.

    Marks the zero-shot model, the fine-tuned model, the WiSE-FT curve through the alpha grid, and the chosen
    alpha.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ref = summary["columns"]["reference"]
    xs = [r[ref] for r in rows]
    ys = [r["avg_shifts"] for r in rows]
    fig, ax = plt.subplots(figsize=(5.5, 4.5), dpi=120)
    ax.plot(xs, ys, "-o", color="tab:purple", ms=4, label="WiSE-FT (alpha grid)")
    for row in rows:
        ax.annotate(f"{row['alpha']:g}", (row[ref], row["avg_shifts"]), textcoords="offset points", xytext=(4, -9),
                    fontsize=7, color="tab:purple")
    for key, marker, color, label in (("zeroshot", "*", "tab:blue", "zero-shot"),
                                      ("finetuned", "D", "tab:red", "fine-tuned"),
                                      ("chosen", "P", "tab:green", f"chosen alpha={summary['chosen_alpha']:g}")):
        row = summary[key]
        ax.scatter([row[ref]], [row["avg_shifts"]], marker=marker, s=140, color=color, zorder=5, label=label)
    ax.set_xlabel(f"{ref} top-1 (%)")
    ax.set_ylabel("average top-1 over distribution shifts (%)")
    ax.set_title("Robustness vs. accuracy")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
