"""The post-fit WiSE-FT sweep as a Lightning callback."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException

from wiseft.checkpoints import load_weights, save_weights
from wiseft.data.datamodule import WiSEFTDataModule
from wiseft.interpolate import interpolate
from wiseft.results import CURVE_PNG, plot_curve, write_rows, write_summary
from wiseft.sweep import Columns, Row, run_sweep, summarize
from wiseft.sweep_progress import SweepProgress, fingerprint

log = logging.getLogger(__name__)

ZEROSHOT_CKPT = "zeroshot.safetensors"
FINETUNED_CKPT = "finetuned.safetensors"
CHOSEN_CKPT = "wiseft_chosen.safetensors"


def _cpu_copy(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


class WiSEFTSweep(L.Callback):
    """Snapshots the zero-shot weights when fitting is set up; after fitting, sweeps alpha and writes the results.

    Outputs (in ``output_dir``): ``results.csv``, ``results.jsonl``, ``summary.json``, ``curve.png`` and, with
    ``save_checkpoints``, ``checkpoints/{zeroshot,finetuned,wiseft_chosen}.safetensors``. The zero-shot snapshot
    is written when fitting is set up, so a resumed run interpolates from the true zero-shot weights; each
    evaluated alpha is recorded in ``sweep_progress.jsonl``, so a relaunched sweep skips it.
    """

    def __init__(
        self,
        output_dir: str,
        alphas: Sequence[float],
        select_on: str = "val",
        save_checkpoints: bool = True,
    ) -> None:
        """Args:
        output_dir: Run folder.
        alphas: Mixing coefficients.
        select_on: ``val`` (held-out reference data) or ``reference``.
        save_checkpoints: Write the three safetensors checkpoints.
        """
        self.output_dir = Path(output_dir)
        self.alphas = list(alphas)
        self.select_on = select_on
        self.save_checkpoints = save_checkpoints
        self.theta_0: dict[str, torch.Tensor] | None = None
        self.rows: list[Row] | None = None
        self.summary: dict[str, Any] | None = None

    @property
    def checkpoint_dir(self) -> Path:
        """Where the safetensors checkpoints go."""
        return self.output_dir / "checkpoints"

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # Before Lightning restores a checkpoint (on_fit_start comes after): a run resumed with ckpt_path into a
        # new folder must still snapshot the zero-shot weights, not the restored fine-tuned ones.
        if stage != "fit" or self.theta_0 is not None:
            return
        path = self.checkpoint_dir / ZEROSHOT_CKPT
        if path.is_file():
            self.theta_0, _ = load_weights(path)
            log.info("zero-shot weights read from %s", path)
            return
        self.theta_0 = _cpu_copy(pl_module.model)
        if trainer.is_global_zero:
            save_weights(self.theta_0, path, self._metadata(pl_module, alpha=0.0))

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.theta_0 is None:
            raise RuntimeError("the zero-shot snapshot is missing: setup did not run")
        datamodule = trainer.datamodule
        if not isinstance(datamodule, WiSEFTDataModule):
            raise TypeError("WiSEFTSweep needs the run's WiSEFTDataModule")
        eval_sets = datamodule.eval_sets
        columns = Columns(
            val=next(s.name for s in eval_sets if s.role == "val"),
            reference=next(s.name for s in eval_sets if s.role == "reference"),
            shifts=tuple(s.name for s in eval_sets if s.role == "shift"),
        )
        loaders = {s.name: datamodule.eval_loader(s) for s in eval_sets}
        model = pl_module.model
        theta_1 = _cpu_copy(model)

        sizes = {s.name: [s.role, len(s.dataset)] for s in eval_sets}
        progress = SweepProgress(self.output_dir, fingerprint(self.theta_0, theta_1, sizes))

        def report(row: Row) -> None:
            log.info("alpha=%.2f  %s", row["alpha"],
                     "  ".join(f"{k}={v:.2f}" for k, v in row.items() if k != "alpha"))
            if trainer.is_global_zero:
                progress.record(row)
            if trainer.received_sigterm:  # pre-empted: stop between alphas, the finished ones are on disk
                raise SIGTERMException

        try:
            rows = run_sweep(model, self.theta_0, theta_1, self.alphas, loaders, columns, pl_module.device, report,
                             done=progress.done)
        finally:
            model.load_state_dict(theta_1)  # leave the module fine-tuned
        summary = summarize(rows, columns, self.select_on)
        self.rows, self.summary = rows, summary
        if trainer.is_global_zero:
            self._write(rows, summary, pl_module, theta_1)
        try:
            log_sweep(trainer.loggers, rows, summary)
        except Exception as err:  # the results are on disk already; a logging service must not fail the run
            log.warning("could not send the sweep to the loggers (%s); results are in %s", err, self.output_dir)

    def _metadata(self, pl_module: L.LightningModule, alpha: float) -> dict[str, Any]:
        return {**getattr(pl_module, "checkpoint_metadata", {}), "alpha": alpha}

    def _write(self, rows: list[Row], summary: dict[str, Any], pl_module: L.LightningModule,
               theta_1: dict[str, torch.Tensor]) -> None:
        write_rows(rows, self.output_dir)
        if summary["columns"]["shifts"]:
            plot_curve(rows, summary, self.output_dir / CURVE_PNG)
        if self.save_checkpoints:
            save_weights(theta_1, self.checkpoint_dir / FINETUNED_CKPT, self._metadata(pl_module, 1.0))
            alpha = summary["chosen_alpha"]
            chosen = interpolate(self.theta_0, theta_1, alpha)
            save_weights(chosen, self.checkpoint_dir / CHOSEN_CKPT, self._metadata(pl_module, alpha))
        # The summary is written last: its presence marks a finished sweep.
        write_summary(summary, self.output_dir)


def log_sweep(loggers: Sequence[Logger], rows: Sequence[Row], summary: dict[str, Any]) -> None:
    """Send the sweep to the run's loggers (never from ``self.log``: Lightning forbids it after fitting).

    W&B gets the table, a line plot of the curve and the headline numbers in the run summary; other loggers get
    one metrics row per alpha.
    """
    columns = list(rows[0])
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            _log_wandb(logger, rows, summary, columns)
        else:
            for i, row in enumerate(rows):
                logger.log_metrics({f"wiseft/{k}": v for k, v in row.items()}, step=i)
            logger.save()


def _log_wandb(logger: WandbLogger, rows: Sequence[Row], summary: dict[str, Any], columns: list[str]) -> None:
    import wandb

    data = [[row[c] for c in columns] for row in rows]
    logger.log_table(key="wiseft/sweep", columns=columns, data=data)
    run = logger.experiment
    if "avg_shifts" in columns:
        ref = summary["columns"]["reference"]
        table = wandb.Table(columns=columns, data=data)
        run.log({"wiseft/curve": wandb.plot.line(table, x=ref, y="avg_shifts",
                                                 title="WiSE-FT: avg shift vs reference top-1")})
    for key in ("zeroshot", "finetuned", "chosen"):
        for col, value in summary[key].items():
            run.summary[f"wiseft/{key}/{col}"] = value
    run.summary["wiseft/chosen_alpha"] = summary["chosen_alpha"]
    for col, alpha in summary["optimal_alpha"].items():
        run.summary[f"wiseft/optimal_alpha/{col}"] = alpha
