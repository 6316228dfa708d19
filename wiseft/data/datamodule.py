"""The DataModule: reference train/val/test and any number of named shift evaluation sets."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from wiseft.config import DataConfig, DatasetSpec
from wiseft.data.datasets import LabeledImageDataset
from wiseft.data.registry import build_dataset, get_kind
from wiseft.distributed import UnpaddedDistributedSampler


@dataclass(frozen=True)
class EvalSet:
    """A named evaluation dataset and its role in the results.

    Attributes:
        name: Result column name.
        role: ``val`` (chooses alpha), ``reference`` (reported reference accuracy) or ``shift``.
        dataset: The dataset, with its class projection.
    """

    name: str
    role: str
    dataset: LabeledImageDataset


class WiSEFTDataModule(L.LightningDataModule):
    """Serves the reference training data, its validation split, and every evaluation set.

    Call order: ``prepare_data`` (generate or download, one process), ``check`` (cheap layout and class checks,
    before any model is built), ``set_transforms`` (the model's preprocessing), ``setup``.
    """

    def __init__(
        self,
        config: DataConfig,
        seed: int = 0,
        train_transform: Callable | None = None,
        eval_transform: Callable | None = None,
    ) -> None:
        """Args:
        config: Validated data config.
        seed: Seeds the held-out split and the training order.
        train_transform: Preprocessing for training images.
        eval_transform: Preprocessing for evaluation images.
        """
        super().__init__()
        self.config = config
        self.seed = seed
        self.train_transform = train_transform
        self.eval_transform = eval_transform
        self.classnames: list[str] | None = None
        self.train_set: LabeledImageDataset | None = None
        self._eval_sets: list[EvalSet] | None = None

    def _specs(self) -> list[tuple[str, DatasetSpec]]:
        ref = self.config.reference
        specs = [("data.reference.train", ref.train), ("data.reference.test", ref.test)]
        if ref.val is not None:
            specs.append(("data.reference.val", ref.val))
        specs += [(f"data.shifts.{name}", spec) for name, spec in self.config.shifts.items() if spec.enabled]
        return specs

    def prepare_data(self) -> None:
        """Generate or fetch every enabled dataset (Lightning runs this on one process per node)."""
        for where, spec in self._specs():
            get_kind(spec, where).prepare(spec)

    def check(self) -> list[str]:
        """Validate layouts and class consistency without reading images; return the reference class names.

        Raises:
            ConfigError or DataError: One line naming the dataset's config key and the problem.
        """
        ref = self.config.reference
        classnames = get_kind(ref.train, "data.reference.train").classnames(ref.train)
        for where, spec in self._specs()[1:]:
            kind = get_kind(spec, where)
            try:
                kind.projection(spec, classnames)
            except Exception as err:
                raise type(err)(f"{where}: {err}") from err
        self.classnames = classnames
        return classnames

    def set_transforms(self, train_transform: Callable, eval_transform: Callable) -> None:
        """Set the model's preprocessing (known only once the model is built)."""
        self.train_transform = train_transform
        self.eval_transform = eval_transform

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets once (idempotent)."""
        if self.train_set is not None:
            return
        classnames = self.classnames or self.check()
        ref = self.config.reference
        train_samples = get_kind(ref.train, "data.reference.train").samples(ref.train)
        val_samples = None
        if ref.val is None:
            # Hold out a seeded fraction of the training data to choose alpha on.
            order = torch.randperm(len(train_samples), generator=torch.Generator().manual_seed(self.seed)).tolist()
            n_val = max(1, round(ref.val_fraction * len(train_samples)))
            val_samples = [train_samples[i] for i in sorted(order[:n_val])]
            train_samples = [train_samples[i] for i in sorted(order[n_val:])]
        self.train_set = build_dataset(ref.train, self.train_transform, None, train_samples, "data.reference.train")
        val_spec = ref.val if ref.val is not None else ref.train
        eval_sets = [
            EvalSet(f"{ref.name}_val", "val",
                    build_dataset(val_spec, self.eval_transform, classnames, val_samples, "data.reference.val")),
            EvalSet(ref.name, "reference",
                    build_dataset(ref.test, self.eval_transform, classnames, None, "data.reference.test")),
        ]
        for name, spec in self.config.shifts.items():
            if spec.enabled:
                dataset = build_dataset(spec, self.eval_transform, classnames, None, f"data.shifts.{name}")
                eval_sets.append(EvalSet(name, "shift", dataset))
        self._eval_sets = eval_sets

    @property
    def eval_sets(self) -> list[EvalSet]:
        """Validation, reference and shift sets, in column order."""
        if self._eval_sets is None:
            self.setup()
        return list(self._eval_sets)

    def _loader(self, dataset: Dataset, shuffle: bool, shard: tuple[int, int] | None = None) -> DataLoader:
        batch_size = self.config.batch_size if shuffle else (self.config.eval_batch_size or self.config.batch_size)
        # Under several processes an evaluation set is split into disjoint unpadded shards (never Lightning's
        # padded DistributedSampler, which repeats samples and skews accuracy).
        sampler = UnpaddedDistributedSampler(dataset, shard[1], shard[0]) if shard and shard[1] > 1 else None
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            sampler=sampler,
            num_workers=self.config.num_workers,
            persistent_workers=self.config.num_workers > 0,
            generator=torch.Generator().manual_seed(self.seed) if shuffle else None,
        )

    def _shard(self) -> tuple[int, int] | None:
        """``(rank, world_size)`` of this process when attached to a trainer."""
        trainer = self.trainer
        return None if trainer is None else (trainer.global_rank, trainer.world_size)

    def eval_loader(self, eval_set: EvalSet, shard: tuple[int, int] | None = None) -> DataLoader:
        """Ordered, unpadded loader over one evaluation set, or over shard ``(rank, world_size)`` of it."""
        return self._loader(eval_set.dataset, shuffle=False, shard=shard)

    def train_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self.eval_loader(self.eval_sets[0], self._shard())
