"""One report for a whole sweep: ``python -m wiseft.review.report <sweep folder> [--select-by COLUMN]``.

Collects every finished job of a Hydra multirun (or a single run) into one table and one figure, and names the
best recipe and job. They are chosen on reference data only (by default the held-out ``<reference>_val`` column, at
each job's own chosen alpha), never on the shifts: those are what the sweep is reporting. Jobs that differ only in
``seed`` are repeats of one recipe: a recipe is scored by the mean over its seeds (``python train.py -m seed=0,1,2
finetune.lr=...``), so that a lucky seed does not pick it, and the best job is the best seed of the best recipe.

Writes, in the sweep folder: ``sweep_results.csv`` (one row per job), ``sweep_recipes.csv`` (one row per recipe:
mean and standard deviation over its seeds), ``sweep_rows.csv`` (one row per job and alpha),
``sweep_summary.json`` and ``sweep_curves.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wiseft.errors import ConfigError, WiseftError
from wiseft.io.atomic import atomic_write_text
from wiseft.review.multirun import SEED_KEYS, Job, Sweep, format_value, load_sweep, mean_sd
from wiseft.review.plots import Curve, baselines_of, plot_robustness, save_figure
from wiseft.review.results import csv_text

SWEEP_RESULTS_CSV = "sweep_results.csv"
SWEEP_RECIPES_CSV = "sweep_recipes.csv"
SWEEP_ROWS_CSV = "sweep_rows.csv"
SWEEP_SUMMARY_JSON = "sweep_summary.json"
SWEEP_CURVES_PNG = "sweep_curves.png"


def _columns(sweep: Sweep) -> dict[str, Any]:
    first = sweep.jobs[0].summary["columns"]
    for job in sweep.jobs[1:]:
        cols = job.summary["columns"]
        if cols["reference"] != first["reference"] or cols["val"] != first["val"]:
            raise ConfigError(f"job '{job.name}' has reference columns {cols['val']}/{cols['reference']}, job "
                              f"'{sweep.jobs[0].name}' has {first['val']}/{first['reference']}: not one sweep")
    return first


def selection_columns(sweep: Sweep) -> tuple[str, str]:
    """The columns a best job may be chosen by: ``(validation, reference)``."""
    cols = _columns(sweep)
    return cols["val"], cols["reference"]


def _select_by(sweep: Sweep, select_by: str | None) -> str:
    allowed = selection_columns(sweep)
    select_by = select_by or allowed[0]
    if select_by not in allowed:
        raise ConfigError(f"--select-by: '{select_by}' is not a reference column; choose the best job on "
                          f"{allowed[0]} (held-out) or {allowed[1]}, never on shift data")
    return select_by


@dataclass
class Recipe:
    """The jobs of a sweep that share every hyperparameter but the seed.

    Attributes:
        params: The hyperparameters that tell this recipe apart (the seed aside).
        jobs: Its finished jobs, one per seed.
    """

    params: dict[str, Any]
    jobs: list[Job]

    @property
    def label(self) -> str:
        """``key=value, ...`` (``all jobs`` when nothing but the seed varies)."""
        return ", ".join(f"{k}={format_value(v)}" for k, v in self.params.items()) or "all jobs"

    def chosen(self, column: str) -> tuple[float, float]:
        """Mean and standard deviation over the seeds of ``column`` at each job's chosen alpha."""
        return mean_sd([job.summary["chosen"][column] for job in self.jobs])


def recipes(sweep: Sweep) -> list[Recipe]:
    """The sweep's jobs grouped by recipe (every hyperparameter but the seed), in order of first appearance."""
    groups: dict[str, Recipe] = {}
    for job in sweep.jobs:
        params = {k: v for k, v in job.params.items() if k not in SEED_KEYS}
        groups.setdefault(json.dumps(params, sort_keys=True, default=str), Recipe(params, [])).jobs.append(job)
    return list(groups.values())


def has_seeds(sweep: Sweep) -> bool:
    """Whether some jobs are repeats of one recipe with another seed."""
    return any(len(recipe.jobs) > 1 for recipe in recipes(sweep))


def best_recipe(sweep: Sweep, select_by: str | None = None) -> Recipe:
    """The recipe whose chosen-alpha models score highest on ``select_by`` on average over its seeds (ties: the
    first recipe).

    Raises:
        ConfigError: ``select_by`` is not a reference column (names the allowed ones).
    """
    select_by = _select_by(sweep, select_by)
    return max(recipes(sweep), key=lambda recipe: recipe.chosen(select_by)[0])


def best_job(sweep: Sweep, select_by: str | None = None) -> Job:
    """The best seed of the best recipe: the job whose chosen-alpha model scores highest on ``select_by`` within
    :func:`best_recipe` (ties: the first job). Without seeds, simply the best job.

    Args:
        sweep: The loaded sweep.
        select_by: ``<reference>_val`` (default) or the reference column; shift columns are refused.

    Raises:
        ConfigError: ``select_by`` is not a reference column (names the allowed ones).
    """
    select_by = _select_by(sweep, select_by)
    return max(best_recipe(sweep, select_by).jobs, key=lambda job: job.summary["chosen"][select_by])


def _metric_columns(sweep: Sweep) -> list[str]:
    cols: list[str] = []
    for job in sweep.jobs:
        cols += [c for c in job.rows[0] if c != "alpha" and c not in cols]
    return cols


def _param_keys(sweep: Sweep) -> list[str]:
    keys: list[str] = []
    for job in sweep.jobs:
        keys += [k for k in job.params if k not in keys]
    return keys


def job_table(sweep: Sweep, best: Job) -> list[dict[str, Any]]:
    """One row per job: hyperparameters, chosen alpha, every column at the chosen alpha, and the endpoints'
    reference and average-shift accuracy."""
    ref = _columns(sweep)["reference"]
    params, metrics = _param_keys(sweep), _metric_columns(sweep)
    table = []
    for job in sweep.jobs:
        s = job.summary
        row: dict[str, Any] = {"job": job.name, **{k: job.params.get(k) for k in params},
                               "chosen_alpha": s["chosen_alpha"]}
        row.update({c: s["chosen"].get(c) for c in metrics})
        for key in ("zeroshot", "finetuned"):
            for col in (ref, "avg_shifts"):
                if col in s[key]:
                    row[f"{key}/{col}"] = s[key][col]
        row["best"] = job is best
        table.append(row)
    return table


def recipe_table(sweep: Sweep, best: Recipe) -> list[dict[str, Any]]:
    """One row per recipe: its hyperparameters, seeds, and the mean and standard deviation (``<column>_sd``) over
    its seeds of the chosen alpha, every column at the chosen alpha, and the endpoints' reference and average-shift
    accuracy."""
    ref = _columns(sweep)["reference"]
    params, metrics = _param_keys(sweep), _metric_columns(sweep)
    table = []
    for recipe in recipes(sweep):
        row: dict[str, Any] = {**{k: recipe.params.get(k) for k in params if k not in SEED_KEYS},
                               "seeds": len(recipe.jobs), "jobs": " ".join(job.name for job in recipe.jobs)}
        values = {"chosen_alpha": [job.summary["chosen_alpha"] for job in recipe.jobs]}
        values.update({c: [job.summary["chosen"][c] for job in recipe.jobs] for c in metrics
                       if all(c in job.summary["chosen"] for job in recipe.jobs)})
        for key in ("zeroshot", "finetuned"):
            for col in (ref, "avg_shifts"):
                if all(col in job.summary[key] for job in recipe.jobs):
                    values[f"{key}/{col}"] = [job.summary[key][col] for job in recipe.jobs]
        for col, vals in values.items():
            row[col], row[f"{col}_sd"] = mean_sd(vals)
        row["best"] = recipe.params == best.params
        table.append(row)
    return table


def alpha_table(sweep: Sweep) -> list[dict[str, Any]]:
    """One row per job and alpha (the long form, for plots and notebooks)."""
    params, metrics = _param_keys(sweep), _metric_columns(sweep)
    return [{"job": job.name, **{k: job.params.get(k) for k in params}, "alpha": row["alpha"],
             "chosen": row["alpha"] == job.summary["chosen_alpha"], **{c: row.get(c) for c in metrics}}
            for job in sweep.jobs for row in job.rows]




def sweep_figure(sweep: Sweep, best: Job | None = None) -> Any:
    """Every job's curve on the same logit axes (the best job drawn thicker)."""
    curves = [Curve(job.label, job.rows, job.summary) for job in sweep.jobs]
    title = f"{sweep.root.name}: {len(sweep.jobs)} job(s), robustness vs. accuracy (logit axes)"
    return plot_robustness(curves, baselines_of(sweep.jobs[0].summary), title=title,
                           highlight=best.label if best is not None else None)


def write_report(root: str | Path, select_by: str | None = None) -> dict[str, Any]:
    """Load a sweep folder and write its table, long-form rows, summary and figure into it.

    Returns:
        The sweep summary (also written as ``sweep_summary.json``).

    Raises:
        DataError: No finished job. ConfigError: a bad ``select_by``.
    """
    sweep = load_sweep(root)
    select_by = _select_by(sweep, select_by)
    recipe, best = best_recipe(sweep, select_by), best_job(sweep, select_by)
    summary = {
        "select_by": select_by,
        "best_recipe": {"params": recipe.params, "jobs": [job.name for job in recipe.jobs],
                        select_by: dict(zip(("mean", "sd"), recipe.chosen(select_by), strict=True))},
        "recipes": [{"params": r.params, "jobs": [job.name for job in r.jobs],
                     select_by: dict(zip(("mean", "sd"), r.chosen(select_by), strict=True))} for r in recipes(sweep)],
        "best_job": best.name,
        "best_params": best.params,
        "best": {"chosen_alpha": best.summary["chosen_alpha"], "chosen": best.summary["chosen"],
                 "path": str(best.path)},
        "jobs": [{"name": job.name, "params": job.params, "chosen_alpha": job.summary["chosen_alpha"],
                  "chosen": job.summary["chosen"], "zeroshot": job.summary["zeroshot"],
                  "finetuned": job.summary["finetuned"]} for job in sweep.jobs],
        "unfinished": sweep.unfinished,
        "columns": sweep.jobs[0].summary["columns"],
    }
    out = sweep.root
    atomic_write_text(out / SWEEP_RESULTS_CSV, csv_text(job_table(sweep, best)))
    atomic_write_text(out / SWEEP_RECIPES_CSV, csv_text(recipe_table(sweep, recipe)))
    atomic_write_text(out / SWEEP_ROWS_CSV, csv_text(alpha_table(sweep)))
    if summary["columns"]["shifts"]:
        save_figure(sweep_figure(sweep, best), out / SWEEP_CURVES_PNG)
    atomic_write_text(out / SWEEP_SUMMARY_JSON, json.dumps(summary, indent=2) + "\n")
    return summary


def rich_table(sweep: Sweep, best: Job, columns: Sequence[str] | None = None) -> Any:
    """A rich table of the jobs at their chosen alpha (the best job highlighted)."""
    from rich.table import Table

    cols = _columns(sweep)
    shown = list(columns) if columns is not None else [
        c for c in (cols["val"], cols["reference"], *cols["shifts"], "avg_shifts", "er_avg_shifts")
        if any(c in job.summary["chosen"] for job in sweep.jobs)]
    params = _param_keys(sweep)
    table = Table(title=f"{sweep.root}: chosen-alpha results per job", header_style="bold")
    for name in ("job", *params, "alpha", *shown):
        table.add_column(name, justify="left" if name in ("job", *params) else "right", overflow="fold")
    for job in sweep.jobs:
        chosen = job.summary["chosen"]
        cells = [job.name, *(format_value(job.params.get(k, "")) for k in params), f"{job.summary['chosen_alpha']:g}",
                 *(f"{chosen[c]:.2f}" if c in chosen else "-" for c in shown)]
        table.add_row(*cells, style="bold green" if job is best else None)
    return table


def rich_recipe_table(sweep: Sweep, best: Recipe, columns: Sequence[str] | None = None) -> Any:
    """A rich table of the recipes, mean +- standard deviation over seeds at the chosen alpha (the best one
    highlighted)."""
    from rich.table import Table

    cols = _columns(sweep)
    shown = list(columns) if columns is not None else [
        c for c in (cols["val"], cols["reference"], "avg_shifts", "er_avg_shifts")
        if all(c in job.summary["chosen"] for job in sweep.jobs)]
    params = [k for k in _param_keys(sweep) if k not in SEED_KEYS]
    from rich import box

    table = Table(title=f"{sweep.root.name}: recipes, mean ± sd over seeds at the chosen alpha", header_style="bold",
                  box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 0, 0, 1))
    for name in params:
        table.add_column(name, overflow="fold")
    for name in ("seeds", "alpha", *shown):  # numbers never wrap; the hyperparameter columns give way
        table.add_column(name.replace("_", " "), justify="right", no_wrap=True)
    for recipe in recipes(sweep):
        alpha = mean_sd([job.summary["chosen_alpha"] for job in recipe.jobs])
        cells = [*(format_value(recipe.params.get(k, "")) for k in params), str(len(recipe.jobs)),
                 f"{alpha[0]:.2f}±{alpha[1]:.2f}", *("{:.2f}±{:.1f}".format(*recipe.chosen(c)) for c in shown)]
        table.add_row(*cells, style="bold green" if recipe.params == best.params else None)
    return table


def rich_alpha_table(job: Job, columns: Sequence[str] | None = None) -> Any:
    """A rich table of one job's sweep, one row per alpha (the chosen alpha highlighted)."""
    from rich.table import Table

    cols = job.summary["columns"]
    shown = list(columns) if columns is not None else [
        c for c in (cols["val"], cols["reference"], *cols["shifts"], "avg_shifts", "avg_ref_shifts",
                    *(c for c in job.rows[0] if c.startswith("er_"))) if c in job.rows[0]]
    table = Table(title=f"{job.label}: chosen alpha {job.summary['chosen_alpha']:g} "
                        f"(on {job.summary['selected_on']})", header_style="bold")
    for name in ("alpha", *shown):
        table.add_column(name, justify="right", overflow="fold")
    for row in job.rows:
        chosen = row["alpha"] == job.summary["chosen_alpha"]
        table.add_row(f"{row['alpha']:g}", *(f"{row[c]:.2f}" for c in shown), style="bold green" if chosen else None)
    return table


def main(argv: Sequence[str] | None = None) -> int:
    """The ``python -m wiseft.review.report`` command."""
    parser = argparse.ArgumentParser(prog="python -m wiseft.review.report", description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="a Hydra sweep folder (multirun) or a single run folder")
    parser.add_argument("--select-by", default=None,
                        help="column that picks the best recipe and job: <reference>_val (default) or <reference>")
    args = parser.parse_args(argv)
    try:
        summary = write_report(args.folder, args.select_by)
    except WiseftError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from rich.console import Console

    sweep = load_sweep(args.folder)
    best = next(job for job in sweep.jobs if job.name == summary["best_job"])
    console = Console()
    select_by = summary["select_by"]
    if has_seeds(sweep):
        recipe = best_recipe(sweep, select_by)
        console.print(rich_recipe_table(sweep, recipe))
        mean, sd = recipe.chosen(select_by)
        console.print(f"best recipe by {select_by} (mean of {len(recipe.jobs)} seeds): [bold]{recipe.label}[/bold] "
                      f"({mean:.2f} ± {sd:.2f}); its best seed: job {best.label} "
                      f"(alpha={best.summary['chosen_alpha']:g})")
    else:
        console.print(rich_table(sweep, best))
        console.print(f"best job by {select_by}: [bold]{best.label}[/bold] "
                      f"(alpha={summary['best']['chosen_alpha']:g})")
    if sweep.unfinished:
        console.print(f"[yellow]unfinished (no summary.json): {', '.join(sweep.unfinished)}[/yellow]")
    written = [n for n in (SWEEP_RESULTS_CSV, SWEEP_RECIPES_CSV, SWEEP_ROWS_CSV, SWEEP_SUMMARY_JSON, SWEEP_CURVES_PNG)
               if (sweep.root / n).is_file()]
    console.print(f"wrote {', '.join(written)} in {sweep.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
