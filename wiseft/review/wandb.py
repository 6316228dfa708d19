"""W&B: a logger whose failures never fail the run, and the sweep sent to it (table, curves, summary, artifact).

Results are always written to the run folder first.

No API key, no network, a service outage, or an error while logging: the logger warns once, switches to offline
mode if it was online, and if W&B cannot run at all it turns into a no-op for the rest of the run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from lightning.fabric.loggers.logger import _DummyExperiment
from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only

log = logging.getLogger(__name__)

T = TypeVar("T")


class ResilientWandbLogger(WandbLogger):
    """:class:`~lightning.pytorch.loggers.WandbLogger` that degrades instead of raising.

    Starting the W&B run is tried online (when configured so), then offline; if both fail, the logger becomes a
    no-op. Any later W&B error (a dropped connection, a failed upload) is logged once and disables the logger.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._disabled_reason: str | None = None
        if self._wandb_init.get("anonymous") is None:
            # Lightning always passes `anonymous`; W&B deprecated it and warns on the terminal even for None.
            self._wandb_init.pop("anonymous", None)
        if self._offline:
            # Lightning only sets WANDB_MODE, which W&B ignores once it has set up in this process (a multirun's
            # second job, after an online one, would try the network).
            self._wandb_init["mode"] = "offline"

    @property
    def disabled(self) -> bool:
        """Whether W&B failed and this logger has become a no-op."""
        return self._disabled_reason is not None

    def _disable(self, err: BaseException, doing: str) -> None:
        if self._disabled_reason is None:
            self._disabled_reason = f"{type(err).__name__}: {err}"
            log.warning("W&B failed while %s (%s); continuing without W&B, results are still written to the run "
                        "folder", doing, " ".join(str(err).split())[:300])
        self._experiment = _DummyExperiment()

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        if self._experiment is not None:
            return self._experiment
        try:
            return super().experiment
        except Exception as err:
            if self._offline:
                self._disable(err, "starting the run")
                return self._experiment
            log.warning("W&B could not start online (%s); retrying offline (upload later with `wandb sync`)",
                        " ".join(str(err).split())[:300])
        self._offline = True
        self._wandb_init["mode"] = "offline"  # explicit: W&B keeps the settings it read at its first init
        self._experiment = None
        try:
            return super().experiment
        except Exception as err:
            self._disable(err, "starting the run offline")
            return self._experiment

    @property
    def version(self) -> str | None:
        if isinstance(self._experiment, _DummyExperiment):
            return self._id
        return super().version

    def _guard(self, doing: str, fn: Callable[[], T]) -> T | None:
        if self.disabled:
            return None
        try:
            return fn()
        except Exception as err:
            self._disable(err, doing)
            return None

    @rank_zero_only
    def log_hyperparams(self, params: Any) -> None:
        self._guard("logging hyperparameters", lambda: super(ResilientWandbLogger, self).log_hyperparams(params))

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self._guard("logging metrics", lambda: super(ResilientWandbLogger, self).log_metrics(metrics, step))

    @rank_zero_only
    def log_table(self, *args: Any, **kwargs: Any) -> None:
        self._guard("logging a table", lambda: super(ResilientWandbLogger, self).log_table(*args, **kwargs))

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        self._guard("uploading a checkpoint",
                    lambda: super(ResilientWandbLogger, self).after_save_checkpoint(checkpoint_callback))

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self._guard("finishing the run", lambda: super(ResilientWandbLogger, self).finalize(status))

    def finish(self) -> None:
        """Close the W&B run (each job of a multirun must, or the next job's metrics join it)."""
        if self._experiment is not None and not isinstance(self._experiment, _DummyExperiment):
            self._guard("finishing the run", self._experiment.finish)


def log_sweep(loggers: Sequence[Logger], curves: Mapping[str, Sequence[Mapping[str, float]]],
              summary: Mapping[str, Any], figure: Path | None = None, checkpoint: Path | None = None) -> None:
    """Send the sweep to the run's loggers (never from ``self.log``: Lightning forbids it after fitting).

    W&B gets, in the run itself, the headline method's sweep table, charts of its curve (the average and each shift
    against the reference), the logit-axes figure, the headline numbers in the run summary and, optionally, the
    chosen-alpha checkpoint as a model artifact; every other method (the output-space ensemble, ...) gets a W&B run
    of its own in the same group, named ``<run>/<method>``, with the same keys, so that the dashboard compares
    the methods side by side. Other loggers get one metrics row per alpha, under ``<method>/<column>``.

    Args:
        loggers: The run's loggers.
        curves: Method -> one row per alpha (the headline method first).
        summary: The run's summary (:func:`~wiseft.sweep.summary.summarize_methods`).
        figure: The run's ``curve.png`` (logged to W&B as an image when it exists).
        checkpoint: A checkpoint to upload to W&B as an artifact (``None``: none).
    """
    primary = summary.get("method", next(iter(curves)))
    methods = summary.get("methods") or {primary: summary}
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            run = logger.experiment
            if not isinstance(run, _DummyExperiment):
                run.config.update({"method": primary}, allow_val_change=True)  # the dashboard groups by it
            log_wandb(run, curves[primary], summary, figure, checkpoint)
            for method, rows in curves.items():
                if method != primary:
                    _log_method_run(run, method, rows, {**methods[method], "columns": summary["columns"]})
        else:
            for method, rows in curves.items():
                for i, row in enumerate(rows):
                    logger.log_metrics({f"{method}/{k}": v for k, v in row.items()}, step=i)
            logger.save()


def _log_method_run(run: Any, method: str, rows: Sequence[Mapping[str, float]], summary: Mapping[str, Any]) -> None:
    """One more method of this run, as a W&B run of its own beside it (same project, group, mode and keys)."""
    import wandb

    if isinstance(run, _DummyExperiment):
        return
    config = {**dict(run.config), "method": method}
    name = run.name or run.id
    sibling = wandb.init(project=run.project, group=run.group or name, name=f"{name}/{method}",
                         job_type="method", config=config, dir=str(Path(run.dir).parents[2]), reinit="create_new",
                         settings=wandb.Settings(mode=run.settings.mode, silent=True))
    try:
        log_wandb(sibling, rows, summary)
    finally:
        sibling.finish()


def log_wandb(run: Any, rows: Sequence[Mapping[str, float]], summary: Mapping[str, Any], figure: Path | None = None,
              checkpoint: Path | None = None) -> None:
    """Log a sweep to a W&B run (see :func:`log_sweep`)."""
    import wandb

    columns = list(rows[0])
    data = [[row[c] for c in columns] for row in rows]
    table = wandb.Table(columns=columns, data=data)
    ref = summary["columns"]["reference"]
    shifts = list(summary["columns"]["shifts"])
    payload: dict[str, Any] = {"wiseft/sweep": table}
    if "avg_shifts" in columns:
        payload["wiseft/curve"] = wandb.plot.line(table, x=ref, y="avg_shifts",
                                                  title="WiSE-FT: avg shift vs reference top-1")
    for shift in shifts:
        payload[f"wiseft/curve/{shift}"] = wandb.plot.line(table, x=ref, y=shift,
                                                           title=f"WiSE-FT: {shift} vs {ref} top-1")
    if shifts:
        payload["wiseft/curves"] = wandb.plot.line_series(
            xs=[row[ref] for row in rows], ys=[[row[s] for row in rows] for s in shifts], keys=shifts,
            title=f"WiSE-FT: every shift vs {ref} top-1", xname=ref)
    if figure is not None and Path(figure).is_file():
        payload["wiseft/curve_logit"] = wandb.Image(str(figure), caption="robustness vs accuracy, logit axes")
    run.log(payload)
    # The curve as history too, against alpha: browsable in `wandb leet` and as ordinary line charts.
    run.define_metric("wiseft/alpha", hidden=True)
    run.define_metric("wiseft/by_alpha/*", step_metric="wiseft/alpha")
    for row in rows:
        run.log({"wiseft/alpha": row["alpha"], **{f"wiseft/by_alpha/{c}": v for c, v in row.items() if c != "alpha"}})
    headline: dict[str, Any] = {f"wiseft/{key}/{col}": value for key in ("zeroshot", "finetuned", "chosen")
                                for col, value in summary[key].items()}
    headline["wiseft/chosen_alpha"] = summary["chosen_alpha"]
    headline["wiseft/selected_on"] = summary["selected_on"]
    if summary.get("selection"):
        headline["wiseft/best_alpha"] = summary["selection"]["best_alpha"]
        headline["wiseft/select_within_se"] = summary["selection"]["within_se"]
    for col, alpha in summary["optimal_alpha"].items():
        headline[f"wiseft/optimal_alpha/{col}"] = alpha
        headline[f"wiseft/optimal/{col}"] = summary["optimal"][col]
    run.summary.update(headline)
    if checkpoint is not None:
        artifact = wandb.Artifact(name=f"wiseft-{run.id}", type="model",
                                  metadata={"alpha": summary["chosen_alpha"], "selected_on": summary["selected_on"],
                                            "chosen": summary["chosen"]})
        artifact.add_file(str(checkpoint))
        run.log_artifact(artifact, aliases=["chosen", f"alpha-{summary['chosen_alpha']:g}"])
