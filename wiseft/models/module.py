"""The LightningModule: fine-tunes an :class:`ImageClassifier` end to end or its head only."""

from __future__ import annotations

import math

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from wiseft.config.schema import FinetuneConfig
from wiseft.errors import CheckpointError
from wiseft.io.checkpoints import check_matches
from wiseft.models.classifier import ImageClassifier


def warmup_cosine(step: int, warmup_steps: int, total_steps: int) -> float:
    """LR multiplier: linear warmup from ~0 to 1 over ``warmup_steps``, then cosine decay to 0 at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


class WiSEFTModule(L.LightningModule):
    """Fine-tunes the injected classifier with cross-entropy, AdamW and a per-step warmup + cosine schedule.

    With ``mode="linear"`` the image encoder is frozen (and kept in eval mode) and only the head trains.
    """

    def __init__(self, model: ImageClassifier, finetune: FinetuneConfig) -> None:
        """Args:
        model: Image encoder + zero-shot-initialised head (built by the factory, passed in).
        finetune: The recipe.
        """
        super().__init__()
        self.model = model.train()
        self.finetune = finetune
        self.save_hyperparameters({"finetune": vars(finetune)})
        if finetune.mode == "linear":
            model.image_encoder.requires_grad_(False)
        self.train_acc = MulticlassAccuracy(num_classes=model.num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes=model.num_classes, average="micro")
        # Weighted by batch size and synced as (sum, count): exact under DDP's uneven evaluation shards.
        self.val_loss = MeanMetric()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def on_train_epoch_start(self) -> None:
        if self.finetune.mode == "linear":
            # A frozen encoder must not update normalisation statistics or apply dropout.
            self.model.image_encoder.eval()

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, labels = batch
        logits = self(images)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.finetune.label_smoothing)
        self.train_acc(logits, labels)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/acc", self.train_acc, prog_bar=True)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"])
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, labels = batch
        logits = self(images)
        self.val_acc(logits, labels)
        self.val_loss.update(F.cross_entropy(logits, labels), weight=len(labels))
        self.log("val/loss", self.val_loss)
        self.log("val/acc", self.val_acc, prog_bar=True)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Lightning's own strict load reports every mismatch in a multi-line dump; fail first with one line.
        source = f"checkpoint '{self.trainer.ckpt_path}'" if self._trainer is not None else "checkpoint"
        if "state_dict" not in checkpoint:
            raise CheckpointError(f"{source} holds no model weights ('state_dict'); is it a Lightning checkpoint?")
        check_matches(self, checkpoint["state_dict"], source)

    def configure_optimizers(self) -> dict:
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=self.finetune.lr, weight_decay=self.finetune.weight_decay,
                                      betas=tuple(self.finetune.betas))
        total = int(self.trainer.estimated_stepping_batches)
        warmup = min(self.finetune.warmup_steps, total)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(step, warmup, total))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
