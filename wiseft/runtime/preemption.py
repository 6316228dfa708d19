"""A checkpoint on SIGTERM (pre-emption) and at the end of training, next to Lightning's periodic ones.

Periodic (step-level) checkpoints come from Lightning's ``ModelCheckpoint`` (``conf/callbacks/model_checkpoint.yaml``,
``every_n_train_steps``); this callback covers the moments it does not.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)

LAST_CKPT = ModelCheckpoint.CHECKPOINT_NAME_LAST + ModelCheckpoint.FILE_EXTENSION


class ResumeCheckpoint(L.Callback):
    """Writes ``<dirpath>/last.ckpt`` when SIGTERM arrives (SLURM pre-emption) and when training ends.

    Lightning's signal connector only raises a flag on SIGTERM and stops after the current batch; this callback
    saves at that batch boundary (the same state a step checkpoint holds), so the relaunched run continues with
    the next batch. A SIGTERM outside a training batch (validation, the post-fit sweep) is saved when Lightning
    stops the run. The end-of-training checkpoint lets a run killed during the sweep skip training on relaunch.
    """

    def __init__(self, dirpath: str | Path) -> None:
        """Args:
        dirpath: Folder of ``last.ckpt`` (the ``ModelCheckpoint`` folder, so both write the same file).
        """
        self.dirpath = Path(dirpath)
        self._saved_step: int | None = None

    @property
    def ckpt_path(self) -> Path:
        """Where the checkpoint goes."""
        return self.dirpath / LAST_CKPT

    def _save(self, trainer: L.Trainer, why: str) -> None:
        trainer.save_checkpoint(self.ckpt_path, weights_only=False)  # the full training state
        self._saved_step = trainer.global_step
        log.info("%s: checkpoint saved to %s (step %d)", why, self.ckpt_path, trainer.global_step)

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.received_sigterm and self._saved_step != trainer.global_step:
            self._save(trainer, "SIGTERM")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.received_sigterm or self._left_to_model_checkpoint(trainer):
            return
        self._save(trainer, "training finished")

    def _left_to_model_checkpoint(self, trainer: L.Trainer) -> bool:
        # Skip a second multi-GB write when a ModelCheckpoint keeping last.ckpt in this folder has just written
        # this very state, or has not written yet: its own on_train_end (Lightning runs checkpoint callbacks last)
        # then saves it. Writing first would make it version its file to last-v1.ckpt instead.
        for cb in trainer.callbacks:
            if not isinstance(cb, ModelCheckpoint) or not cb.save_last or not _same_path(cb.dirpath, self.dirpath):
                continue
            if not getattr(cb, "_last_checkpoint_saved", None) and self.ckpt_path.stem == cb.CHECKPOINT_NAME_LAST:
                return True  # the condition of ModelCheckpoint.on_train_end
            if (_same_path(cb.last_model_path, self.ckpt_path)
                    and getattr(cb, "_last_global_step_saved", None) == trainer.global_step):
                return True
        return False

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        # Only a signal: a checkpoint taken after another error (a non-finite loss) is not one to resume from.
        if isinstance(exception, SIGTERMException) and self._saved_step != trainer.global_step:
            self._save(trainer, "SIGTERM")


def _same_path(a: str | Path | None, b: Path) -> bool:
    return bool(a) and Path(a).resolve() == b.resolve()
