"""Every method of a set of runs in one table and one figure: ``python -m wiseft.review.compare <folders>``.

Reads each finished run under the given folders (Hydra multiruns, single runs, and the output folders of
``python -m wiseft.pipeline.merge``), and for every training method (``finetune``: E2E, LP-FT, FLYP, ...) and every
evaluated method (WiSE-FT's weight interpolation, the output-space ensemble, Fisher merge, soups, Model Stock)
reports the zero-shot model, the fine-tuned endpoint (alpha = 1), each method at alpha = 0.5 (the paper's headline)
and each method at its alpha chosen on held-out reference data. Runs that differ only in ``seed`` are
aggregated: mean and sample standard deviation. Other hyperparameters that vary between runs become part of the
method's label.

Writes ``comparison.csv``, ``comparison.md`` and ``comparison.png`` (every method's mean curve and points on the
robustness-vs-accuracy axes) into ``--out`` (default: the first folder), and prints the table.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wiseft.errors import DataError, WiseftError
from wiseft.io.atomic import atomic_write_text
from wiseft.review.multirun import SEED_KEYS, Job, find_job_dirs, format_value, job_params, load_job, mean_sd
from wiseft.review.results import METHOD_LABELS, PRIMARY, csv_text, read_curves

COMPARISON_CSV = "comparison.csv"
COMPARISON_MD = "comparison.md"
COMPARISON_PNG = "comparison.png"

#: How each training method is named.
FINETUNE_LABELS = {"e2e": "E2E", "linear": "LC", "lpft": "LP-FT", "flyp": "FLYP"}
#: Methods whose alpha = 1 model is the fine-tuned one of the same run: only their chosen alpha is a new model.
SHARED_ENDPOINTS = frozenset({"ensemble", "fisher"})


@dataclass
class Group:
    """The runs of one method (one training method, one evaluated method, one setting of the other keys).

    Attributes:
        finetune: Training method (``e2e``, ``lpft``, ...).
        method: Evaluated method (``wiseft``, ``ensemble``, ...).
        params: The other hyperparameters that tell this group apart.
        runs: ``(job, that method's rows, that method's summary)`` per seed.
    """

    finetune: str
    method: str
    params: dict[str, Any]
    runs: list[tuple[Job, list[dict[str, float]], dict[str, Any]]] = field(default_factory=list)

    @property
    def label(self) -> str:
        """``<training> / <method>[, key=value ...]``."""
        name = f"{FINETUNE_LABELS.get(self.finetune, self.finetune)} / {METHOD_LABELS.get(self.method, self.method)}"
        extra = ", ".join(f"{k}={format_value(v)}" for k, v in self.params.items())
        return f"{name}, {extra}" if extra else name


def _finetune_of(job: Job) -> str:
    return str(job.summary.get("finetune") or (job.config.get("finetune") or {}).get("mode") or "e2e")


def _folder_params(jobs: Sequence[Job]) -> list[dict[str, Any]]:
    """What tells apart the runs of one folder: a multirun's sweep overrides, or a merge's group keys.

    Per folder, so that the keys one sweep varies are not confused with the config differences between folders
    (another training method's defaults, run paths) or between a multirun and its merge.
    """
    merges = [(job.config.get("merge") or {}).get("group") for job in jobs]
    if all(isinstance(group, dict) for group in merges):
        return [dict(group) for group in merges]
    return job_params(jobs)


def load_groups(folders: Sequence[str | Path]) -> list[Group]:
    """Every finished run under ``folders``, grouped by method (seeds together).

    Raises:
        DataError: A folder does not exist or holds no finished run, or the runs do not share their columns.
    """
    jobs: list[Job] = []
    all_params: list[dict[str, Any]] = []
    for folder in folders:
        root = Path(folder).expanduser()
        if not root.is_dir():
            raise DataError(f"'{root}' does not exist")
        finished, _ = find_job_dirs(root)
        if not finished:
            raise DataError(f"no finished run under '{root}' (a finished run folder holds summary.json)")
        found = [load_job(path, root) for path in finished]
        jobs += found
        all_params += _folder_params(found)
    first = jobs[0].summary["columns"]
    for job in jobs[1:]:
        if job.summary["columns"]["reference"] != first["reference"]:
            raise DataError(f"'{job.path}' reports reference '{job.summary['columns']['reference']}', '{jobs[0].path}'"
                            f" '{first['reference']}': not one comparison")
    groups: dict[tuple, Group] = {}
    for job, params in zip(jobs, all_params, strict=True):
        # The training method is part of the label already; the seed is what gets averaged.
        params = {k: v for k, v in params.items() if k not in SEED_KEYS and k != "finetune"
                  and not k.startswith("finetune.mode")}
        curves = read_curves(job.path)
        methods = job.summary.get("methods") or {PRIMARY: job.summary}
        for method, rows in curves.items():
            key = (_finetune_of(job), method, tuple(sorted((k, str(v)) for k, v in params.items())))
            group = groups.setdefault(key, Group(key[0], method, params))
            group.runs.append((job, rows, methods[method]))
    return list(groups.values())


def _metric_columns(columns: Mapping[str, Any], rows: Sequence[Mapping[str, float]]) -> list[str]:
    ref = columns["reference"]
    wanted = [ref, "avg_shifts", "er_avg_shifts", f"ece_{ref}", "ece_avg_shifts", f"nll_{ref}", "nll_avg_shifts"]
    return [c for c in wanted if all(c in r and not math.isnan(r[c]) for r in rows)]


def comparison_rows(groups: Sequence[Group]) -> list[dict[str, Any]]:
    """The table: one row per (method, model), each metric as mean and standard deviation over seeds."""
    if not groups:
        return []
    columns = groups[0].runs[0][0].summary["columns"]
    entries: list[tuple[str, str, list[dict[str, float]], list[float]]] = []
    zero = [runs_rows[0] for g in groups if g.method == PRIMARY for _, runs_rows, _ in g.runs]
    if zero:
        entries.append(("zero-shot", "alpha = 0", zero, [0.0] * len(zero)))
    for g in groups:
        at = {a: [next((r for r in rows if r["alpha"] == a), None) for _, rows, _ in g.runs] for a in (0.5, 1.0)}
        if g.method not in SHARED_ENDPOINTS and all(at[1.0]):
            entries.append((g.label, "alpha = 1 (fine-tuned)" if g.method == PRIMARY else "alpha = 1", at[1.0],
                            [1.0] * len(g.runs)))
        if all(at[0.5]):  # the paper's fixed alpha, for every method with a curve
            entries.append((g.label, "alpha = 0.5", at[0.5], [0.5] * len(g.runs)))
        entries.append((g.label, "chosen alpha", [s["chosen"] for _, _, s in g.runs],
                        [s["chosen_alpha"] for _, _, s in g.runs]))
    table = []
    for label, model, rows, alphas in entries:
        alpha_mean, alpha_sd = mean_sd(alphas)
        out: dict[str, Any] = {"method": label, "model": model, "runs": len(rows), "alpha": alpha_mean,
                               "alpha_sd": alpha_sd}
        for col in _metric_columns(columns, rows):
            out[col], out[f"{col}_sd"] = mean_sd([r[col] for r in rows])
        table.append(out)
    return table




def _cell(row: Mapping[str, Any], col: str) -> str:
    if col not in row:
        return "-"
    digits = 3 if col.startswith("nll_") else 2
    sd = row.get(f"{col}_sd", 0.0)
    return f"{row[col]:.{digits}f}" + (f" ± {sd:.{digits}f}" if row["runs"] > 1 and sd else "")


def _headers(table: Sequence[Mapping[str, Any]]) -> list[str]:
    cols: list[str] = []
    for row in table:
        cols += [k for k in row if k not in cols and not k.endswith("_sd") and k not in ("method", "model", "runs")]
    return cols


def markdown(table: Sequence[Mapping[str, Any]]) -> str:
    """The table in Markdown (mean ± sample standard deviation over seeds)."""
    cols = _headers(table)
    lines = ["| method | model | runs | " + " | ".join(cols) + " |", "|---|---|---|" + "---|" * len(cols)]
    for row in table:
        lines.append(f"| {row['method']} | {row['model']} | {row['runs']} | "
                     + " | ".join(_cell(row, c) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def _mean_curve(group: Group) -> tuple[list[dict[str, float]], dict[str, Any]]:
    """The group's rows averaged over seeds at the alphas every run evaluated, and its mean points."""
    alphas = sorted(set.intersection(*({r["alpha"] for r in rows} for _, rows, _ in group.runs)))

    def mean_row(rows: Sequence[Mapping[str, float]]) -> dict[str, float]:
        keys = set.intersection(*(set(r) for r in rows))
        return {k: statistics.fmean(r[k] for r in rows) for k in keys}

    curve = [mean_row([next(r for r in rows if r["alpha"] == a) for _, rows, _ in group.runs]) for a in alphas]
    first = group.runs[0][2]
    points = {key: mean_row([s[key] for _, _, s in group.runs]) for key in ("zeroshot", "finetuned", "chosen")
              if all(key in s for _, _, s in group.runs)}
    job = group.runs[0][0]
    return curve, {**points, "columns": job.summary["columns"], "baselines": job.summary.get("baselines"),
                   "chosen_alpha": first.get("chosen_alpha")}


def comparison_figure(groups: Sequence[Group]) -> Any:
    """Every method's mean curve (seeds averaged) on the robustness-vs-accuracy axes."""
    from wiseft.review.plots import Curve, plot_robustness

    curves = [Curve(g.label, *_mean_curve(g)) for g in groups]
    return plot_robustness(curves, title="Methods compared: robustness vs. accuracy (logit axes, mean over seeds)")


def write_comparison(folders: Sequence[str | Path], out: str | Path | None = None) -> list[dict[str, Any]]:
    """Load the runs, write ``comparison.{csv,md,png}`` into ``out`` (default: the first folder); return the table."""
    groups = load_groups(folders)
    table = comparison_rows(groups)
    out_dir = Path(out) if out is not None else Path(folders[0])
    atomic_write_text(out_dir / COMPARISON_CSV, csv_text(table))
    atomic_write_text(out_dir / COMPARISON_MD, markdown(table))
    if groups[0].runs[0][0].summary["columns"]["shifts"]:
        from wiseft.review.plots import save_figure

        save_figure(comparison_figure(groups), out_dir / COMPARISON_PNG)
    return table


def main(argv: Sequence[str] | None = None) -> int:
    """The ``python -m wiseft.review.compare`` command."""
    parser = argparse.ArgumentParser(prog="python -m wiseft.review.compare", description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", help="multirun folders, run folders or merge output folders")
    parser.add_argument("--out", default=None, help="where to write comparison.{csv,md,png} (default: first folder)")
    args = parser.parse_args(argv)
    try:
        table = write_comparison(args.folders, args.out)
    except WiseftError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(markdown(table), end="")
    print(f"wrote {COMPARISON_CSV}, {COMPARISON_MD}, {COMPARISON_PNG} in {args.out or args.folders[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
