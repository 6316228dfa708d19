"""Effective robustness (Taori et al., 2020): shift accuracy above what standard models reach at the same
reference accuracy.

Standard (non-robust) models lie close to a line once both accuracies are logit-transformed:
``logit(shift) = w * logit(reference) + b``. A model's effective robustness on a shift is
``ER = shift - sigmoid(w * logit(reference) + b)``, in percentage points here (accuracies are in percent).

Baselines are data: named tables of ``(w, b)`` per shift column, shipped in
``wiseft/data/metadata/effective_robustness.json`` (the published ImageNet fits) or read from a user file; a
user's own table of standard models can be fitted with :func:`fit_table` (``python -m wiseft.review.robustness fit``).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wiseft.errors import ConfigError, DataError
from wiseft.io.atomic import atomic_write_text

log = logging.getLogger(__name__)

SHIPPED_TABLES = Path(__file__).parents[1] / "data" / "metadata" / "effective_robustness.json"
AVG_SHIFTS = "avg_shifts"
ER_PREFIX = "er_"


def logit(p: float) -> float:
    """``log(p / (1 - p))`` for a fraction ``p`` in [0, 1] (infinite at the ends)."""
    if p <= 0.0:
        return -math.inf
    if p >= 1.0:
        return math.inf
    return math.log(p) - math.log1p(-p)


def sigmoid(z: float) -> float:
    """The inverse of :func:`logit`, stable for large ``|z|``."""
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


@dataclass(frozen=True)
class LinearFit:
    """A baseline line in logit space: ``logit(shift) = w * logit(reference) + b``.

    Attributes:
        w: Slope.
        b: Intercept.
        over: For a fit of the average over several shifts: those shift columns (the fit applies only to a
            run that averages exactly them).
    """

    w: float
    b: float
    over: tuple[str, ...] | None = None

    def baseline(self, reference: float) -> float:
        """Shift accuracy (percent) a standard model with ``reference`` accuracy (percent) is expected to have."""
        return 100.0 * sigmoid(self.w * logit(reference / 100.0) + self.b)

    def effective_robustness(self, reference: float, shift: float) -> float:
        """``shift - baseline(reference)`` in percentage points."""
        return shift - self.baseline(reference)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (``over`` only when set)."""
        out: dict[str, Any] = {"w": self.w, "b": self.b}
        if self.over is not None:
            out["over"] = list(self.over)
        return out


@dataclass(frozen=True)
class BaselineTable:
    """Fits of several shift columns against one reference column.

    Attributes:
        reference: Name of the reference column the fits were made against (``imagenet``).
        fits: Shift column name -> fit; ``avg_shifts`` is the fit of the average over ``fit.over``.
        source: Where the numbers come from.
    """

    reference: str
    fits: dict[str, LinearFit]
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON form, as read by :func:`load_baselines`."""
        return {"reference": self.reference, "source": self.source,
                "fits": {name: fit.to_dict() for name, fit in self.fits.items()}}


def _parse_table(data: Any, where: str) -> BaselineTable:
    if not isinstance(data, Mapping) or not isinstance(data.get("reference"), str) \
            or not isinstance(data.get("fits"), Mapping):
        raise DataError(f"{where}: expected an object with 'reference' (a column name) and 'fits' "
                        "({shift: {w, b}})")
    fits = {}
    for name, fit in data["fits"].items():
        try:
            over = fit.get("over")
            fits[name] = LinearFit(float(fit["w"]), float(fit["b"]), tuple(over) if over is not None else None)
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise DataError(f"{where}: fit '{name}' needs numbers 'w' and 'b', got {fit!r}") from err
    return BaselineTable(data["reference"], fits, str(data.get("source", "")))


def shipped_tables() -> dict[str, BaselineTable]:
    """The tables shipped with the package, by name."""
    raw = json.loads(SHIPPED_TABLES.read_text())
    return {name: _parse_table(table, f"{SHIPPED_TABLES}:{name}") for name, table in raw.items()}


def load_baselines(spec: str) -> BaselineTable:
    """A shipped table by name (``imagenet``) or a JSON file written by :func:`save_baselines`.

    Raises:
        ConfigError: Neither a shipped name nor an existing file.
        DataError: The file is not a valid table.
    """
    tables = shipped_tables()
    if spec in tables:
        return tables[spec]
    path = Path(spec).expanduser()
    if not path.is_file():
        raise ConfigError(f"robustness.fits: '{spec}' is neither a shipped table ({', '.join(tables)}) nor a file")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not valid JSON ({err})") from err
    return _parse_table(data, str(path))


def save_baselines(table: BaselineTable, path: str | Path) -> None:
    """Write ``table`` as JSON (atomically)."""
    atomic_write_text(path, json.dumps(table.to_dict(), indent=2) + "\n")


def fit_linear(reference: Sequence[float], shift: Sequence[float], names: Sequence[str] | None = None) -> LinearFit:
    """Least-squares line through ``(logit(reference), logit(shift))``.

    Args:
        reference: Reference accuracies of the baseline models, in percent.
        shift: Their accuracies on one shift, in percent.
        names: Model names, for error messages.

    Raises:
        DataError: Fewer than two models, an accuracy at 0 or 100 (infinite logit), or all reference
            accuracies equal.
    """
    if len(reference) != len(shift):
        raise DataError(f"{len(reference)} reference accuracies but {len(shift)} shift accuracies")
    if len(reference) < 2:
        raise DataError(f"a baseline fit needs at least two models, got {len(reference)}")
    names = list(names) if names is not None else [f"row {i + 1}" for i in range(len(reference))]
    for name, r, s in zip(names, reference, shift, strict=True):
        for value in (r, s):
            if not 0.0 < value < 100.0:
                raise DataError(f"model '{name}': accuracy {value} must lie strictly between 0 and 100 (percent)")
    xs = [logit(r / 100.0) for r in reference]
    ys = [logit(s / 100.0) for s in shift]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0.0:
        raise DataError("every baseline model has the same reference accuracy: the slope is undefined")
    w = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    return LinearFit(w, my - w * mx)


def fit_table(
    models: Sequence[Mapping[str, Any]],
    reference: str,
    shifts: Sequence[str] | None = None,
    name_key: str = "model",
    source: str = "",
) -> BaselineTable:
    """Fit every shift column of a table of standard models, plus their average.

    Args:
        models: One mapping per baseline model: accuracies (percent) by column, and optionally its name.
        reference: The reference column.
        shifts: Shift columns to fit (default: every other numeric column).
        name_key: Column holding the model name.
        source: Recorded in the table.

    Returns:
        A table with one fit per shift and, with two or more shifts, ``avg_shifts`` over all of them.

    Raises:
        DataError: A missing or non-numeric value (names model and column), or a degenerate fit.
    """
    if not models:
        raise DataError("the baseline table has no model")
    if shifts is None:
        shifts = [c for c in models[0] if c not in (reference, name_key)]
    if not shifts:
        raise DataError(f"the baseline table has no shift column besides '{reference}'")
    names = [str(m.get(name_key, f"row {i + 1}")) for i, m in enumerate(models)]

    def column(col: str) -> list[float]:
        values = []
        for name, model in zip(names, models, strict=True):
            try:
                values.append(float(model[col]))
            except KeyError as err:
                raise DataError(f"model '{name}' has no '{col}' accuracy") from err
            except (TypeError, ValueError) as err:
                raise DataError(f"model '{name}': '{col}' = {model[col]!r} is not a number") from err
        return values

    ref = column(reference)
    per_shift = {s: column(s) for s in shifts}
    fits = {s: fit_linear(ref, per_shift[s], names) for s in shifts}
    if len(shifts) > 1:
        avg = [sum(per_shift[s][i] for s in shifts) / len(shifts) for i in range(len(models))]
        fits[AVG_SHIFTS] = dataclasses.replace(fit_linear(ref, avg, names), over=tuple(shifts))
    return BaselineTable(reference, fits, source)


def read_model_table(path: str | Path) -> list[dict[str, str]]:
    """Read a CSV of baseline models (a header row, then one model per row).

    Raises:
        DataError: Missing file or no rows.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"baseline model table '{path}' does not exist")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise DataError(f"baseline model table '{path}' has no rows")
    return rows


@dataclass
class RobustnessConfig:
    """Which effective-robustness baselines apply to a run's result columns (``conf/robustness``).

    Attributes:
        fits: A shipped table name (``imagenet``), a JSON file of fits, or ``None`` for no baselines.
        columns: Result column -> the table's column name, where they differ (e.g. ``{v2: imagenet_v2}``;
            map the run's reference column onto the table's reference the same way).
    """

    fits: str | None = "imagenet"
    columns: dict[str, str] = field(default_factory=dict)


def resolve_baselines(
    config: RobustnessConfig | Mapping[str, Any] | None,
    reference: str,
    shifts: Sequence[str],
) -> dict[str, LinearFit]:
    """The fits that apply to a run's columns, keyed by the run's column names.

    A fit applies when the run's reference column maps to the table's reference and the shift column maps to a
    fitted name; ``avg_shifts`` applies only when the run's shifts map exactly onto the columns it averages.

    Args:
        config: The ``robustness`` config (``None`` or ``fits: null``: no baselines).
        reference: The run's reference column.
        shifts: The run's shift columns.

    Raises:
        ConfigError: A mapped column that the run does not have, or an unknown table.
    """
    if config is None:
        return {}
    if isinstance(config, Mapping):
        unknown = set(config) - {f.name for f in dataclasses.fields(RobustnessConfig)}
        if unknown:
            raise ConfigError(f"robustness.{sorted(unknown)[0]}: unknown key")
        config = RobustnessConfig(fits=config.get("fits"), columns=dict(config.get("columns") or {}))
    if not config.fits:
        return {}
    table = load_baselines(config.fits)
    known = {reference, *shifts}
    for col in config.columns:
        if col not in known:
            raise ConfigError(f"robustness.columns.{col}: the run has no result column '{col}' "
                              f"(columns: {', '.join(sorted(known))})")

    def mapped(col: str) -> str:
        return config.columns.get(col, col)

    if mapped(reference) != table.reference:
        log.info("no effective-robustness baselines: reference column '%s' is not the table's '%s' "
                 "(map it with robustness.columns)", reference, table.reference)
        return {}
    fits = {s: table.fits[mapped(s)] for s in shifts if mapped(s) in table.fits and mapped(s) != AVG_SHIFTS}
    avg = table.fits.get(AVG_SHIFTS)
    if avg is not None and shifts and avg.over is not None and sorted(mapped(s) for s in shifts) == sorted(avg.over):
        fits[AVG_SHIFTS] = avg
    return fits


def add_effective_robustness(row: Mapping[str, float], reference: str, fits: Mapping[str, LinearFit]) -> dict:
    """Return ``row`` with ``er_<column>`` for every column that has a fit."""
    out = dict(row)
    for col, fit in fits.items():
        if col in row:
            out[f"{ER_PREFIX}{col}"] = fit.effective_robustness(row[reference], row[col])
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m wiseft.review.robustness fit MODELS.csv --reference imagenet --out fits.json``."""
    parser = argparse.ArgumentParser(prog="python -m wiseft.review.robustness",
                                     description="Effective-robustness baselines (Taori et al., 2020).")
    sub = parser.add_subparsers(dest="command", required=True)
    fit = sub.add_parser("fit", help="fit (w, b) per shift from a CSV of standard models (accuracies in percent)")
    fit.add_argument("table", help="CSV: a 'model' column, the reference column and one column per shift")
    fit.add_argument("--reference", required=True, help="reference column (e.g. imagenet)")
    fit.add_argument("--shifts", default=None, help="comma-separated shift columns (default: all others)")
    fit.add_argument("--out", required=True, help="JSON file to write (use it as robustness.fits=<file>)")
    show = sub.add_parser("show", help="print a shipped table or a fits file")
    show.add_argument("fits", nargs="?", default="imagenet")
    args = parser.parse_args(argv)
    if args.command == "fit":
        shifts = args.shifts.split(",") if args.shifts else None
        table = fit_table(read_model_table(args.table), args.reference, shifts, source=f"fitted on {args.table}")
        save_baselines(table, args.out)
    else:
        table = load_baselines(args.fits)
    print(json.dumps(table.to_dict(), indent=2))


if __name__ == "__main__":
    import sys

    from wiseft.errors import WiseftError

    try:
        main()
    except WiseftError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
