"""Exact resume: a training loader that continues mid-epoch where a killed run stopped, and per-step seeds.

Lightning restores the loop counters from a checkpoint, but continuing an epoch at the right sample needs the
loader's help: Lightning asks every loader that has ``state_dict``/``load_state_dict`` for its state when it saves
and hands it back before the first batch of a resumed epoch. This loader makes everything random about training
data a pure function of ``(seed, epoch, position)``, so that a resumed run draws exactly what the uninterrupted
one drew:

- the order of epoch ``e`` is a permutation seeded by ``(seed, e)``, not the next draw of a long-lived generator;
- each sample's random augmentation runs under its own seed ``(seed, e, index)``, so it does not depend on what
  was decoded before it, on prefetching, or on the number of worker processes;
- a resumed epoch skips the batches the checkpoint had already trained on, without decoding them;
- every training step reseeds the global RNGs from ``(seed, epoch, batch, rank)`` (:class:`StepSeed`), and
  :class:`ReloadTrainData` makes Lightning rebuild the loader after it has restored the loop counters.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

_MASK64 = (1 << 64) - 1


def mix_seed(*values: int) -> int:
    """A well-spread 63-bit seed from integers (splitmix64 over the sequence), stable across runs and platforms."""
    state = 0x9E3779B97F4A7C15
    for value in values:
        state = (state ^ (int(value) & _MASK64)) & _MASK64
        state = (state + 0x9E3779B97F4A7C15) & _MASK64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        state = z ^ (z >> 31)
    return state >> 1


class EpochSampler(DistributedSampler):
    """Shuffles with a permutation seeded by ``(seed, epoch)``, takes this process's shard, and yields
    ``(index, sample_seed)`` pairs (plain indices with ``sample_seeds=False``).

    Under several processes the permutation is padded to a multiple of their number (as
    :class:`~torch.utils.data.DistributedSampler` does for training: every process must see as many batches) and
    process ``rank`` takes positions ``rank::num_replicas``. It subclasses ``DistributedSampler`` so that Lightning
    keeps it instead of injecting its own.

    The epoch is read from ``epoch_fn`` when an epoch's iteration starts: Lightning creates the first iterator of
    a resumed run before it calls ``set_epoch``, so ``set_epoch`` would shuffle that epoch wrongly.
    """

    def __init__(self, num_samples: int, seed: int, epoch_fn: Callable[[], int], num_replicas: int = 1,
                 rank: int = 0, sample_seeds: bool = True) -> None:
        """Args:
        num_samples: Dataset length.
        seed: Run seed.
        epoch_fn: Returns the epoch about to be iterated.
        num_replicas: Number of processes.
        rank: This process's global rank.
        sample_seeds: Yield ``(index, seed)`` pairs for :class:`SeededSamples` rather than plain indices.
        """
        super().__init__(range(num_samples), num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed,
                         drop_last=False)
        self.dataset_size = num_samples
        self.epoch_fn = epoch_fn
        self.sample_seeds = sample_seeds
        self._resume: tuple[int, int] | None = None  # (epoch, samples of this shard to skip)

    def order(self, epoch: int) -> list[int]:
        """This process's sample order in ``epoch``."""
        generator = torch.Generator().manual_seed(mix_seed(self.seed, epoch))
        indices = torch.randperm(self.dataset_size, generator=generator).tolist()
        padding = self.total_size - len(indices)
        indices += (indices * (padding // max(1, len(indices)) + 1))[:padding]
        return indices[self.rank:self.total_size:self.num_replicas]

    def resume_at(self, epoch: int, skip: int) -> None:
        """Make the next iteration be one of ``epoch`` that starts after its first ``skip`` samples."""
        self._resume = (epoch, skip)

    def __iter__(self) -> Iterator[Any]:
        if self._resume is not None:
            # The first iteration after a restore continues the saved position; Lightning creates it before its
            # epoch counter has moved on past an epoch that the checkpoint had finished.
            (epoch, skip), self._resume = self._resume, None
        else:
            epoch, skip = self.epoch_fn(), 0
        for index in self.order(epoch)[skip:]:
            yield (index, mix_seed(self.seed, epoch, index)) if self.sample_seeds else index


class SeededSamples(Dataset):
    """Wraps a map-style dataset so that item ``(index, seed)`` is produced under its own RNG seed.

    Seeds torch's and Python's global generators (what torchvision and timm transforms draw from) for the
    duration of one item and restores them afterwards, so the caller's random stream is untouched.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        py_state = random.getstate()
        try:
            with torch.random.fork_rng(devices=[]):
                # The CPU generator only (what data transforms draw from); torch.manual_seed would also seed every
                # accelerator, at ~100x the cost.
                torch.random.default_generator.manual_seed(seed)
                random.seed(seed)
                return self.dataset[index]
        finally:
            random.setstate(py_state)


class ResumableLoader(DataLoader):
    """The training DataLoader: deterministic per-epoch order and augmentation, resumable mid-epoch.

    Lightning treats it as stateful (it has ``state_dict``/``load_state_dict``): the state saved with a checkpoint
    is the epoch and the number of batches already trained in it, read from ``progress_fn``, and a resumed epoch
    starts after them. (Lightning hands the state back only to a loader created after it restored the loop
    counters; :class:`~wiseft.runtime.exact_resume.ReloadTrainData` sees to that.)
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        seed: int,
        progress_fn: Callable[[], tuple[int, int]],
        epoch_fn: Callable[[], int],
        num_replicas: int = 1,
        rank: int = 0,
        sample_seeds: bool = True,
        **kwargs: Any,
    ) -> None:
        """Args:
        dataset: Map-style training dataset.
        batch_size: Samples per batch.
        seed: Run seed.
        progress_fn: ``(epoch, batches done in that epoch)`` of the training loop, read when a checkpoint is saved.
        epoch_fn: The epoch about to be iterated, read when an iteration starts.
        num_replicas: Number of processes (each gets its shard of every epoch).
        rank: This process's global rank.
        sample_seeds: Seed each sample's transform (off for data without random augmentation).
        **kwargs: Passed to :class:`~torch.utils.data.DataLoader` (``num_workers``...).
        """
        sampler = EpochSampler(len(dataset), seed, epoch_fn, num_replicas, rank, sample_seeds)  # type: ignore[arg-type]
        super().__init__(SeededSamples(dataset) if sample_seeds else dataset, batch_size=batch_size, sampler=sampler,
                         **kwargs)
        self.progress_fn = progress_fn

    def state_dict(self) -> dict[str, int]:
        epoch, batches = self.progress_fn()
        if batches >= len(self):  # the epoch is complete: the next iteration starts the next one
            epoch, batches = epoch + 1, 0
        return {"epoch": int(epoch), "batches": int(batches)}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self.resume_at(int(state_dict["epoch"]), int(state_dict["batches"]))

    def resume_at(self, epoch: int, batches: int) -> None:
        """Make the next iteration be one of ``epoch`` that starts after its first ``batches`` batches."""
        assert isinstance(self.sampler, EpochSampler)
        self.sampler.resume_at(epoch, batches * int(self.batch_size or 1))


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
