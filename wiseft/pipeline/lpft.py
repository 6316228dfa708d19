"""``finetune=lpft``: LP-FT's first stage, the linear probe (Kumar et al., ICLR 2022).

LP-FT first trains a linear probe on the frozen zero-shot encoder, exactly as ``finetune=linear`` does (the
encoder's features computed once and cached, the zero-shot-initialised head trained on them; recipe
``finetune.probe``), then fine-tunes end to end from the probe's head (the ordinary end-to-end fit; recipe
``finetune``). WiSE-FT interpolates the zero-shot model with the LP-FT model; the probe is an intermediate step.

The probe's head is kept in ``checkpoints/lpft_probe.safetensors``, so a run killed in the second stage or in the
sweep does not train it again when relaunched. A run killed during the probe trains it again from its start: with
the same seed and the features read back from the cache, it is the same head.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from wiseft.config.schema import FinetuneConfig
from wiseft.data.datamodule import EvalSet, WiSEFTDataModule
from wiseft.data.features import FeatureDataModule
from wiseft.errors import CheckpointError, RunInterrupted
from wiseft.io.checkpoints import load_weights, save_weights
from wiseft.models.classifier import ImageClassifier
from wiseft.models.linear_probe import LinearProbeModule
from wiseft.runtime.exact_resume import ReloadTrainData, StepSeed

log = logging.getLogger(__name__)

PROBE_CKPT = "lpft_probe.safetensors"
HEAD_PREFIX = "head."


def probe_path(out_dir: str | Path) -> Path:
    """Where a run keeps its LP-FT probe."""
    return Path(out_dir) / "checkpoints" / PROBE_CKPT


def probe_recipe(finetune: FinetuneConfig) -> FinetuneConfig:
    """The first stage's recipe: ``finetune=linear`` with the ``finetune.probe`` settings."""
    p = finetune.probe
    return dataclasses.replace(finetune, mode="linear", lr=p.lr, weight_decay=p.weight_decay, epochs=p.epochs,
                               warmup_steps=p.warmup_steps, label_smoothing=0.0)


class _ProbeFeatures(FeatureDataModule):
    """Features of the training set and of the held-out reference data only: the probe is validated there, and the
    shifts are evaluated once, after the second stage."""

    @property
    def eval_sets(self) -> list[EvalSet]:
        return super().eval_sets[:1]


class ProbeStage:
    """Trains (or reads back) the probe and writes its head into the classifier the second stage fine-tunes."""

    def __init__(self, cfg: DictConfig, finetune: FinetuneConfig, images: WiSEFTDataModule,
                 classifier: ImageClassifier, out_dir: str | Path, metadata: dict[str, Any]) -> None:
        """Args:
        cfg: The job's composed config (its ``trainer`` section, under the probe's epochs).
        finetune: The LP-FT recipe (``finetune.probe`` is the first stage's).
        images: The job's image DataModule, checked and with its transforms set.
        classifier: The zero-shot classifier; its head is replaced by the probe's.
        out_dir: The run folder.
        metadata: The run's checkpoint metadata (model config and class names).
        """
        self.cfg = cfg
        self.recipe = probe_recipe(finetune)
        self.images = images
        self.classifier = classifier
        self.path = probe_path(out_dir)
        self.out_dir = Path(out_dir)
        self.metadata = metadata

    @property
    def done(self) -> bool:
        """Whether an earlier launch of this run has left the probe on disk."""
        return self.path.is_file()

    def trainer(self, plugins: list[Any]) -> L.Trainer:
        """The probe's Trainer: the job's ``trainer`` config for the probe's epochs, with the job's progress bar
        and seeding, without loggers (one W&B run per job) or checkpoints (the probe is short; its result is kept).

        Args:
            plugins: Fresh trainer plugins (instances are not shared with the second stage's Trainer).
        """
        bars: list[Any] = []
        if self.cfg.trainer.get("enable_progress_bar", True):
            nodes = (self.cfg.get("callbacks") or {}).values()
            bars = [cb for cb in (hydra.utils.instantiate(n) for n in nodes if n is not None and "_target_" in n)
                    if isinstance(cb, ProgressBar)]
        return hydra.utils.instantiate(self.cfg.trainer, max_epochs=self.recipe.epochs,
                                       callbacks=[*bars, StepSeed(int(self.cfg.seed)), ReloadTrainData()],
                                       logger=False, enable_checkpointing=False, enable_model_summary=False,
                                       default_root_dir=str(self.out_dir),
                                       plugins=plugins)

    def run(self, trainer: L.Trainer | None) -> None:
        """Train the probe with ``trainer`` (or read it back when ``done``) and put its head into the classifier."""
        if trainer is not None:
            self._train(trainer)
        state, _ = load_weights(self.path)
        head = {k.removeprefix(HEAD_PREFIX): v for k, v in state.items() if k.startswith(HEAD_PREFIX)}
        expected = self.classifier.head.state_dict()
        if set(head) != set(expected) or any(head[k].shape != v.shape for k, v in expected.items()):
            raise CheckpointError(f"'{self.path}' is not this run's probe head (keys or shapes differ); delete it "
                                  "to train the probe again")
        self.classifier.head.load_state_dict(head)
        log.info("LP-FT: second stage starts from the probe's head (%s)", self.path)

    def _train(self, trainer: L.Trainer) -> None:
        grads = {name: p.requires_grad for name, p in self.classifier.named_parameters()}
        features = _ProbeFeatures.from_images(self.images, self.classifier.image_encoder,
                                              self.recipe.feature_cache)
        module = LinearProbeModule(self.classifier, self.recipe)
        log.info("LP-FT, first stage: linear probe (lr %g, %d epochs)", self.recipe.lr, self.recipe.epochs)
        stopped = RunInterrupted(f"stopped during LP-FT's linear probe (not saved); relaunch with "
                                 f"hydra.run.dir={self.out_dir} to train it again")
        try:
            trainer.fit(module, datamodule=features)
        except SIGTERMException as err:
            raise stopped from err
        finally:
            # The second stage fine-tunes everything the zero-shot classifier trained, in training mode.
            for name, p in self.classifier.named_parameters():
                p.requires_grad_(grads[name])
            self.classifier.train()
        if trainer.interrupted:  # stopped early: no probe to keep
            raise stopped
        acc = trainer.callback_metrics.get("val/acc")
        if acc is not None:
            log.info("LP-FT probe: %s top-1 %.2f", self.images.eval_sets[0].name, 100 * float(acc))
        if trainer.is_global_zero:
            head = {HEAD_PREFIX + k: v.detach().cpu() for k, v in self.classifier.head.state_dict().items()}
            save_weights(head, self.path, {**self.metadata, "stage": "lpft_probe"})
        trainer.strategy.barrier("lpft_probe_saved")  # every process reads the head rank 0 wrote


def zeroshot_state(classifier: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of the zero-shot weights, taken before the probe replaces the head."""
    return {k: v.detach().to("cpu", copy=True) for k, v in classifier.state_dict().items()}
