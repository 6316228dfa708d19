"""What a run ends with on the terminal: the headline numbers, where the files are and how to look at them.

:func:`final_summary` is a pure function of the run's ``summary.json`` (its ``zeroshot``, ``finetuned``,
``chosen``, ``chosen_alpha``, ``selected_on``, ``optimal_alpha``, ``optimal`` and ``columns`` keys) and of what the
run folder holds; :func:`print_final_summary` finds those files and prints it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from wiseft.review.results import CURVE_PNG, RESULTS_CSV, SUMMARY_JSON

#: Files and folders of a run folder worth pointing at, with what they hold.
RUN_FILES: tuple[tuple[str, str], ...] = (
    (RESULTS_CSV, ""),
    (SUMMARY_JSON, ""),
    (CURVE_PNG, "plot"),
    ("checkpoints/", ""),
    ("train.log", ""),
    ("evaluate.log", ""),
)
AVG_SHIFTS = "avg_shifts"
#: Row names of the methods swept beside WiSE-FT, short enough to leave the columns readable at 80 characters.
SHORT_LABELS = {"ensemble": "output ens."}


def result_columns(summary: Mapping[str, Any]) -> list[str]:
    """The columns the table shows: the reference, each shift, and the average over the shifts."""
    columns = summary["columns"]
    shown = [columns["reference"], *columns["shifts"], AVG_SHIFTS]
    return [c for c in shown if c in summary["zeroshot"]]


def selection_note(summary: Mapping[str, Any]) -> str | None:
    """One line on why the chosen alpha is not the best held-out one (a tolerance moved it); else ``None``."""
    selection = summary.get("selection")
    if not selection or not selection.get("within_se") or selection["best_alpha"] == summary["chosen_alpha"]:
        return None
    return (f"alpha {summary['chosen_alpha']:g}: smallest within {selection['within_se']:g} SE "
            f"({selection['tolerance']:.1f} pts) of the best {summary['selected_on']} "
            f"({selection['best']:.1f} at {selection['best_alpha']:g})")


def summary_table(summary: Mapping[str, Any]) -> Table:
    """Top-1 of the zero-shot, fine-tuned and chosen-alpha models and each column's optimal alpha."""
    columns = result_columns(summary)
    title = f"WiSE-FT top-1 accuracy (%), alpha chosen on {summary['selected_on']}"
    # At least as wide as its title, which would otherwise wrap above a table of few columns.
    table = Table(title=title, box=box.SIMPLE_HEAD, header_style="bold", show_edge=False, padding=(0, 0, 0, 1),
                  min_width=len(title))
    table.add_column("", no_wrap=True)
    table.add_column("alpha", justify="right")
    for column in columns:
        table.add_column(column.replace("_", " ") if column == AVG_SHIFTS else column, justify="right")

    def cells(row: Mapping[str, float]) -> list[str]:
        return [f"{row[c]:.1f}" for c in columns]

    table.add_row("zero-shot", "0", *cells(summary["zeroshot"]))
    table.add_row("fine-tuned", "1", *cells(summary["finetuned"]))
    table.add_row("WiSE-FT", f"{summary['chosen_alpha']:g}", *cells(summary["chosen"]), style="bold")
    for method, entry in summary.get("methods", {}).items():  # the other methods swept beside WiSE-FT
        if method != "wiseft" and "chosen" in entry:
            table.add_row(SHORT_LABELS.get(method, method), f"{entry['chosen_alpha']:g}", *cells(entry["chosen"]))
    table.add_row("optimal", "", *cells(summary["optimal"]))
    table.add_row("  at alpha", "", *(f"{summary['optimal_alpha'][c]:g}" for c in columns), style="dim")
    table.caption = selection_note(summary)
    table.caption_justify = "left"
    return table


def shown_path(path: str | Path) -> str:
    """``path`` relative to the working directory when it lies below it (shorter to read and to paste)."""
    relative = os.path.relpath(path)
    return str(path) if relative.startswith("..") else relative


def final_summary(summary: Mapping[str, Any], out_dir: str | Path, files: Sequence[str] = (),
                  wandb_run: str | Path | None = None) -> RenderableType:
    """The end of a run's terminal output: :func:`summary_table`, the run folder's files and the W&B run.

    Args:
        summary: The run's ``summary.json``.
        out_dir: The run folder.
        files: Names of :data:`RUN_FILES` present in it.
        wandb_run: The run's local W&B folder, if it has one.
    """
    described = dict(RUN_FILES)
    listed = ", ".join(f"{name} ({described[name]})" if described[name] else name for name in files)
    lines: list[RenderableType] = [summary_table(summary),
                                   Text(f"run folder: {shown_path(out_dir)}", no_wrap=True, overflow="ignore")]
    if listed:
        lines.append(Text(f"  {listed}"))
    if wandb_run is not None:
        offline = Path(wandb_run).name.startswith("offline-")
        # Unwrapped: a path broken over two lines cannot be pasted (the terminal soft-wraps it instead).
        lines.append(Text(f"W&B run{' (offline)' if offline else ''}: {shown_path(wandb_run)}", no_wrap=True,
                          overflow="ignore"))
        upload = ", wandb sync <it> to upload it" if offline else ""
        lines.append(Text(f"  wandb leet <it> to browse it in the terminal{upload}"))
    return Group(*lines)


def local_wandb_run(out_dir: str | Path) -> Path | None:
    """The run's local W&B folder (``wandb/latest-run``, which W&B points at the newest run), if any."""
    latest = Path(out_dir) / "wandb" / "latest-run"
    return latest.resolve() if latest.is_dir() else None


def print_final_summary(summary: Mapping[str, Any], out_dir: str | Path, console: Console | None = None) -> None:
    """Print :func:`final_summary` for the run folder ``out_dir`` (on rich's console unless given one)."""
    from rich import get_console

    files = [name for name, _ in RUN_FILES if (Path(out_dir) / name).exists()]
    # Not cropped: the path lines may be longer than the terminal is wide.
    (console or get_console()).print(final_summary(summary, out_dir, files, local_wandb_run(out_dir)), crop=False)
