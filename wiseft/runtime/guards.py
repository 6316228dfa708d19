"""Stop training on a non-finite loss or gradient before it reaches the weights or a checkpoint."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch

from wiseft.errors import TrainingError


class FiniteLossGuard(L.Callback):
    """Raises :class:`~wiseft.errors.TrainingError` naming the step when the loss or the gradient is NaN or infinite.

    The loss is checked before the backward pass and the gradient before the optimizer step, so a bad value never
    reaches the weights; no checkpoint is written on this error, so the checkpoints on disk all hold finite
    weights from before the failing step. Under DDP every rank stops together.
    """

    def __init__(self, ckpt_path: str | Path | None = None) -> None:
        """Args:
        ckpt_path: The run's resume checkpoint, named in the message when it exists.
        """
        self.ckpt_path = Path(ckpt_path) if ckpt_path is not None else None

    def _check(self, trainer: L.Trainer, finite: bool, what: str) -> None:
        if trainer.world_size > 1:
            finite = trainer.strategy.reduce_boolean_decision(finite, all=True)
        if finite:
            return
        batch = trainer.fit_loop.epoch_loop.batch_idx
        kept = (f"the last checkpoint, from before this step, is kept at '{self.ckpt_path}'"
                if self.ckpt_path and self.ckpt_path.is_file() else "no checkpoint had been saved yet")
        raise TrainingError(f"non-finite {what} at step {trainer.global_step} (epoch {trainer.current_epoch}, batch "
                            f"{batch}); training stopped, {kept} (lower finetune.lr or check the data)")

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        value = loss.detach()
        self._check(trainer, bool(torch.isfinite(value).all()), f"loss ({value.float().mean().item()})")

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        if getattr(trainer.precision_plugin, "scaler", None) is not None:
            return  # fp16 loss scaling makes inf gradients on purpose and skips those steps itself
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if grads:
            norm = torch.nn.utils.get_total_norm(grads, error_if_nonfinite=False)
            self._check(trainer, bool(torch.isfinite(norm)), "gradient")
