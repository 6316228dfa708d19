"""Callbacks that make a resumed run repeat the uninterrupted one exactly: per-step seeds, data position."""

from __future__ import annotations

import random

import lightning as L
import torch

from wiseft.data.resumable import mix_seed


class StepSeed(L.Callback):
    """Reseeds torch's and Python's global RNGs before every training batch from ``(seed, epoch, batch, rank)``.

    What the model draws at a step (dropout, stochastic depth) then does not depend on anything before it, so a
    run resumed from a checkpoint draws exactly what the uninterrupted run drew.
    """

    def __init__(self, seed: int) -> None:
        """Args:
        seed: Run seed.
        """
        self.seed = seed

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: object,
                             batch_idx: int) -> None:
        step_seed = mix_seed(self.seed, trainer.current_epoch, batch_idx, trainer.global_rank)
        torch.manual_seed(step_seed)
        random.seed(step_seed)


class ReloadTrainData(L.Callback):
    """On resume, rebuilds the training loader after Lightning has restored the loop counters.

    ``configure_optimizers`` reads ``trainer.estimated_stepping_batches``, which makes Lightning build the training
    loader, and start iterating it, before the checkpoint's loop state is restored (Lightning 2.6). That loader
    would then start the resumed epoch from its first batch, and with worker processes in the order of epoch 0;
    Lightning also hands a stateful loader its saved position only when it builds the loader after the restore.
    Dropping the early loader here (``on_fit_start`` runs between the two) makes Lightning build it again at the
    right moment, the way its own tuner forces a reload.
    """

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.ckpt_path is None:
            return
        fit_loop = trainer.fit_loop
        if fit_loop._data_fetcher is not None:
            fit_loop._data_fetcher.teardown()  # stops worker processes of the early loader
            fit_loop._data_fetcher = None
        fit_loop._combined_loader = None
