"""Hydra multiruns: naming a sweep's jobs for loggers, and reading every job's results back.

A finished job folder holds ``config.yaml`` (the resolved config), ``results.jsonl`` (one row per alpha) and
``summary.json`` (written last, so it marks a finished job); Hydra adds ``.hydra/overrides.yaml``.
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from wiseft.errors import DataError
from wiseft.review.results import PRIMARY, RESULTS_JSONL, SUMMARY_JSON, read_rows

CONFIG_YAML = "config.yaml"
#: Config keys that differ between jobs without being hyperparameters.
_NOT_HYPERPARAMETERS = ("paths.", "hydra.", "logger.", "ckpt_path")
#: Keys whose values are repeats of one setting, not settings: runs differing only in these get averaged.
SEED_KEYS = ("seed",)


def _hydra() -> Any | None:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None


def _run_folder(hc: Any) -> str | None:
    output_dir = hc.runtime.get("output_dir") if hc.runtime is not None else None
    return Path(output_dir).name if output_dir else None


def sweep_group() -> str | None:
    """The ``${wiseft_sweep_group:}`` resolver: the sweep folder's name in a Hydra multirun, the run folder's name
    in a single Hydra run, else ``None``.

    Used as the W&B group, so that the dashboard compares the runs of one sweep side by side, and a run's main W&B
    run sits in one group with the runs of its other methods (the output-space ensemble, ...).
    """
    from hydra.types import RunMode

    hc = _hydra()
    if hc is None:
        return None
    return Path(hc.sweep.dir).name if hc.mode == RunMode.MULTIRUN else _run_folder(hc)


def sweep_job_name() -> str | None:
    """The ``${wiseft_sweep_job:}`` resolver: ``<sweep folder name>/<job number>`` in a Hydra multirun, the run
    folder's name in a single Hydra run, else ``None`` (the job's hyperparameters are in the run's config, where the
    dashboard compares them)."""
    from hydra.types import RunMode

    hc = _hydra()
    if hc is None:
        return None
    return f"{Path(hc.sweep.dir).name}/{hc.job.num}" if hc.mode == RunMode.MULTIRUN else _run_folder(hc)


def format_value(value: Any) -> str:
    """A hyperparameter for display: numbers to 4 significant digits, anything else as is."""
    if isinstance(value, bool):
        return str(value)
    try:
        return f"{float(value):.4g}"
    except (TypeError, ValueError):
        return str(value)


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else 0.0


@dataclass
class Job:
    """One finished job of a sweep.

    Attributes:
        name: Folder relative to the sweep folder (Hydra's job number).
        path: The job folder.
        rows: One row per alpha, of the run's headline method (WiSE-FT; a merge's first method).
        summary: The job's ``summary.json``.
        config: The job's resolved config (empty if ``config.yaml`` is missing).
        params: The hyperparameters that tell this job apart (filled by :func:`load_sweep`).
    """

    name: str
    path: Path
    rows: list[dict[str, float]]
    summary: dict[str, Any]
    config: dict[str, Any]
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """``name: key=value, ...`` for legends and tables."""
        if not self.params:
            return self.name
        return f"{self.name}: " + ", ".join(f"{k}={format_value(v)}" for k, v in self.params.items())


@dataclass
class Sweep:
    """The finished jobs of a sweep folder, and the ones that did not finish."""

    root: Path
    jobs: list[Job]
    unfinished: list[str]


def _natural(path: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.as_posix())]


def find_job_dirs(root: str | Path) -> tuple[list[Path], list[Path]]:
    """``(finished, unfinished)`` job folders under ``root`` (``root`` itself counts, for a single run).

    A folder is a job when it holds ``config.yaml`` or ``summary.json``; finished when it holds ``summary.json``.
    Folders are in natural order (2 before 10).
    """
    root = Path(root)
    candidates = {p.parent for name in (SUMMARY_JSON, CONFIG_YAML) for p in root.rglob(name)
                  if ".hydra" not in p.parts and "wandb" not in p.relative_to(root).parts}
    finished = sorted((p for p in candidates if (p / SUMMARY_JSON).is_file()), key=_natural)
    unfinished = sorted((p for p in candidates if not (p / SUMMARY_JSON).is_file()), key=_natural)
    return finished, unfinished


def load_job(path: str | Path, root: str | Path | None = None) -> Job:
    """Read one finished job folder.

    Raises:
        DataError: A missing or unreadable result file (names it).
    """
    path = Path(path)
    root = Path(root) if root is not None else path
    for name in (SUMMARY_JSON, RESULTS_JSONL):
        if not (path / name).is_file():
            raise DataError(f"'{path}' is not a finished run: {name} is missing")
    try:
        summary = json.loads((path / SUMMARY_JSON).read_text())
        rows = read_rows(path, summary.get("method", PRIMARY))  # a merge's headline is a soup, not WiSE-FT
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"'{path}': unreadable result file ({err})") from err
    if not rows:
        raise DataError(f"'{path / RESULTS_JSONL}' holds no row")
    config: dict[str, Any] = {}
    if (path / CONFIG_YAML).is_file():
        config = yaml.safe_load((path / CONFIG_YAML).read_text()) or {}
    name = path.relative_to(root).as_posix() if path != root else path.name
    return Job(name=name, path=path, rows=rows, summary=summary, config=config)


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, Mapping):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


def _overrides(path: Path) -> dict[str, Any] | None:
    file = path / ".hydra" / "overrides.yaml"
    if not file.is_file():
        return None
    from hydra.core.override_parser.overrides_parser import OverridesParser

    out = {}
    for override in OverridesParser.create().parse_overrides([str(o) for o in yaml.safe_load(file.read_text()) or []]):
        key = override.key_or_group
        if not key.startswith(_NOT_HYPERPARAMETERS):
            value = override.value()
            out[key] = value if isinstance(value, (int, float, bool, str)) or value is None else str(value)
    return out


def job_params(jobs: Sequence[Job]) -> list[dict[str, Any]]:
    """The hyperparameters that tell each job apart.

    Keys that Hydra's sweep overrode and whose values differ between jobs when every job has
    ``.hydra/overrides.yaml``; otherwise the config keys whose values differ between the jobs' ``config.yaml``
    (paths, loggers and Hydra's own keys aside).
    """
    overrides = [_overrides(job.path) for job in jobs]
    if jobs and all(o is not None for o in overrides):
        flats = [o or {} for o in overrides]
    else:
        flats = [{k: v for k, v in _flatten(job.config).items() if not k.startswith(_NOT_HYPERPARAMETERS)}
                 for job in jobs]
    keys = sorted({k for f in flats for k in f})
    varying = [k for k in keys if len({json.dumps(f.get(k), sort_keys=True, default=str) for f in flats}) > 1]
    return [{k: f.get(k) for k in varying} for f in flats]


def load_sweep(root: str | Path) -> Sweep:
    """Read every finished job under a sweep folder (or a single run folder).

    Raises:
        DataError: The folder does not exist or holds no finished job.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"sweep folder '{root}' does not exist")
    finished, unfinished = find_job_dirs(root)
    if not finished:
        raise DataError(f"no finished job under '{root}' (a finished job folder holds {SUMMARY_JSON})")
    jobs = [load_job(p, root) for p in finished]
    for job, params in zip(jobs, job_params(jobs), strict=True):
        job.params = params
    return Sweep(root, jobs, [p.relative_to(root).as_posix() for p in unfinished])
