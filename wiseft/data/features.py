"""``finetune=linear``: a DataModule that serves the frozen encoder's features instead of images.

The encoder is frozen, so its features of every image never change during fitting: they are computed once,
sharded over the processes, cached on disk (:mod:`wiseft.data.feature_cache`) and reused by every epoch, by the
validation loop and by the post-fit sweep. As in the reference implementation, training features use the
evaluation transform (no augmentation: augmented features could not be cached).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch.utils.data import DataLoader, TensorDataset

from wiseft.config.schema import DataConfig
from wiseft.data.datamodule import WiSEFTDataModule
from wiseft.data.feature_cache import FeatureCache, Features, cached_features, feature_key, module_fingerprint

log = logging.getLogger(__name__)


class FeatureDataModule(WiSEFTDataModule):
    """Serves ``(features, label)`` batches of the reference training set and of every evaluation set."""

    def __init__(
        self,
        config: DataConfig,
        encoder: torch.nn.Module,
        cache_dir: str | None,
        seed: int = 0,
        eval_transform: Callable | None = None,
    ) -> None:
        """Args:
        config: Validated data config.
        encoder: The frozen image encoder (shared with the module being fitted).
        cache_dir: Feature cache folder; ``None`` keeps features in memory only (one process).
        seed: Seeds the held-out split and the training order.
        eval_transform: The model's evaluation preprocessing, used for every image.
        """
        super().__init__(config, seed=seed, train_transform=eval_transform, eval_transform=eval_transform)
        self.encoder = encoder
        self.cache = FeatureCache(cache_dir) if cache_dir else None
        self.features: dict[str, Features] | None = None

    @classmethod
    def from_images(cls, images: WiSEFTDataModule, encoder: torch.nn.Module,
                    cache_dir: str | None) -> FeatureDataModule:
        """The feature view of an image DataModule (its config, seed, checked class names and eval transform)."""
        module = cls(images.config, encoder, cache_dir, seed=images.seed, eval_transform=images.eval_transform)
        module.classnames = images.classnames
        module._samples, module.skipped = images._samples, images.skipped  # listed (and verified) once
        return module

    def set_transforms(self, train_transform: Callable, eval_transform: Callable) -> None:
        """Features are always computed with the evaluation transform."""
        super().set_transforms(eval_transform, eval_transform)

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets, then compute or read their features (once)."""
        super().setup(stage)
        if self.features is None and self.trainer is not None:
            self.features = self._compute_features()

    def _compute_features(self) -> dict[str, Features]:
        trainer = self.trainer
        device = trainer.strategy.root_device
        encoder_hash = module_fingerprint(self.encoder)  # before the move: hashing reads the bytes on the CPU
        self.encoder.to(device)
        precision = str(trainer.precision)
        batch_size = self.config.eval_batch_size or self.config.batch_size
        datasets = {"train": self.train_set, **{s.name: s.dataset for s in self.eval_sets}}
        out = {}
        for name, dataset in datasets.items():
            key = feature_key(self.encoder, dataset, precision, encoder_hash)
            hit = self.cache is not None and self.cache.path(key).is_file()
            out[name] = cached_features(
                self.encoder, dataset, key, self.cache, rank=trainer.global_rank, world_size=trainer.world_size,
                collectives=trainer.strategy, device=device, batch_size=batch_size,
                num_workers=self.config.num_workers, forward_context=trainer.precision_plugin.forward_context)
            log.info("features of %s: %s (%d x %d)", name, "cached" if hit else "computed",
                     *out[name].features.shape)
        return out

    def feature_set(self, name: str) -> TensorDataset:
        """``(features, label)`` dataset of ``train`` or of an evaluation set's column name."""
        if self.features is None:
            raise RuntimeError("features are computed in setup(), once the DataModule is attached to a trainer")
        f = self.features[name]
        return TensorDataset(f.features, f.labels)

    def train_dataloader(self) -> DataLoader:
        # Features hold no randomness to seed per sample; order and mid-epoch resume as for images.
        return self._train_loader(self.feature_set("train"), sample_seeds=False)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.feature_set(self.eval_sets[0].name), shuffle=False, shard=self._shard())
