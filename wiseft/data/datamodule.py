"""The DataModule: reference train/val/test and any number of named shift evaluation sets."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from wiseft.config.schema import DataConfig, DatasetSpec
from wiseft.data.datasets import LabeledImageDataset
from wiseft.data.registry import build_dataset, get_kind
from wiseft.data.verify import verify_samples
from wiseft.runtime.distributed import UnpaddedDistributedSampler
from wiseft.runtime.exact_resume import ResumableLoader


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
        self._samples: dict[str, list[tuple[str, int]]] = {}
        #: ``(path, reason)`` of every image left out by ``verify_images=skip``.
        self.skipped: list[tuple[str, str]] = []

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
        """Validate layouts, class consistency and sample lists; return the reference class names.

        Lists every dataset's files (an empty class folder or an out-of-range CSV label fails here, before any
        model is built) and, with ``verify_images`` on, decodes every image.

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
        self._scan()
        self.classnames = classnames
        return classnames

    def _scan(self) -> None:
        """List (and with ``verify_images`` on, decode) every dataset's samples."""
        self._samples, self.skipped = {}, []
        for where, spec in self._specs():
            try:
                samples = get_kind(spec, where).samples(spec)
            except Exception as err:
                raise type(err)(f"{where}: {err}") from err
            self._samples[where], bad = verify_samples(samples, self.config.verify_images, where)
            self.skipped += bad

    def set_transforms(self, train_transform: Callable, eval_transform: Callable) -> None:
        """Set the model's preprocessing (known only once the model is built)."""
        self.train_transform = train_transform
        self.eval_transform = eval_transform

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets once (idempotent)."""
        if self.train_set is not None:
            return
        classnames = self.classnames or self.check()
        if not self._samples:  # class names handed over from another DataModule (see FeatureDataModule)
            self._scan()
        ref = self.config.reference
        train_samples = self._samples["data.reference.train"]
        val_samples = None
        if ref.val is None:
            # Hold out a seeded fraction of the training data to choose alpha on.
            order = torch.randperm(len(train_samples), generator=torch.Generator().manual_seed(self.seed)).tolist()
            n_val = max(1, round(ref.val_fraction * len(train_samples)))
            val_samples = [train_samples[i] for i in sorted(order[:n_val])]
            train_samples = [train_samples[i] for i in sorted(order[n_val:])]
        self.train_set = build_dataset(ref.train, self.train_transform, None, train_samples, "data.reference.train")
        val_spec = ref.val if ref.val is not None else ref.train
        if val_samples is None:
            val_samples = self._samples["data.reference.val"]
        eval_sets = [
            EvalSet(f"{ref.name}_val", "val",
                    build_dataset(val_spec, self.eval_transform, classnames, val_samples, "data.reference.val")),
            EvalSet(ref.name, "reference",
                    build_dataset(ref.test, self.eval_transform, classnames, self._samples["data.reference.test"],
                                  "data.reference.test")),
        ]
        for name, spec in self.config.shifts.items():
            if spec.enabled:
                where = f"data.shifts.{name}"
                dataset = build_dataset(spec, self.eval_transform, classnames, self._samples[where], where)
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

    def _train_progress(self) -> tuple[int, int]:
        """``(epoch, batches trained in it)`` of the attached trainer, for the loader's checkpointed state."""
        if self.trainer is None:
            return 0, 0
        fit_loop = self.trainer.fit_loop
        # The batch counter belongs to the last epoch started (its epoch counter moves on when the epoch ends).
        return fit_loop.epoch_progress.current.started - 1, fit_loop.epoch_loop.batch_progress.current.processed

    def _train_epoch(self) -> int:
        """The epoch the trainer is about to iterate (the value Lightning passes to ``set_epoch``)."""
        return 0 if self.trainer is None else self.trainer.fit_loop.epoch_progress.current.processed

    def _train_loader(self, dataset: Dataset, sample_seeds: bool = True) -> ResumableLoader:
        """Shuffled training batches, seeded per epoch (and per sample), sharded over processes, resumable."""
        rank, world_size = self._shard() or (0, 1)
        return ResumableLoader(dataset, self.config.batch_size, self.seed, self._train_progress, self._train_epoch,
                               num_replicas=world_size, rank=rank, sample_seeds=sample_seeds,
                               num_workers=self.config.num_workers, persistent_workers=self.config.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        """Shuffled, augmented training batches; order and augmentation are seeded per epoch and resume exactly."""
        self.setup()
        return self._train_loader(self.train_set)

    def val_dataloader(self) -> DataLoader:
        return self.eval_loader(self.eval_sets[0], self._shard())
