"""The Fisher-weighted merge as a path of the post-fit sweep (``wiseft.fisher.examples=N``).

After fitting, the diagonal Fisher of the zero-shot and of the fine-tuned weights is estimated on the same ``N``
reference training images (a seeded subset, with the evaluation preprocessing, as the WiSE-FT code does), stored
as ``checkpoints/fisher_{zeroshot,finetuned}.safetensors`` and handed to the sweep as a :class:`WeightPath` named
``fisher``: every alpha of the grid, evaluated on the same decoded images as WiSE-FT.

Under several processes each estimates its own contiguous block of the examples (each example's sampled label
depends only on its index, :func:`~wiseft.methods.fisher.fisher_sums`) and the sums are added across processes,
so every process merges with the same Fishers. A relaunched run reuses a stored Fisher whose weights fingerprint,
example count, label kind and seed match, so a resumed sweep evaluates the same merged models.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Subset

from wiseft.config.schema import FisherConfig
from wiseft.data.datamodule import WiSEFTDataModule
from wiseft.data.datasets import LabeledImageDataset
from wiseft.data.registry import build_dataset
from wiseft.errors import CheckpointError
from wiseft.methods.fisher import FisherMix, fisher_sums, load_fisher, save_fisher
from wiseft.runtime.progress_bars import step
from wiseft.sweep.engine import WeightPath
from wiseft.sweep.progress import fingerprint

log = logging.getLogger(__name__)

#: The method's name in the results.
FISHER = "fisher"


def fisher_file(out_dir: str | Path, endpoint: str) -> Path:
    """Where a run stores the Fisher of ``endpoint`` (``zeroshot`` or ``finetuned``)."""
    return Path(out_dir) / "checkpoints" / f"fisher_{endpoint}.safetensors"


def fisher_examples(datamodule: WiSEFTDataModule, n: int, seed: int) -> LabeledImageDataset:
    """``n`` reference training images (a seeded random subset, never the held-out split) with the evaluation
    preprocessing."""
    datamodule.setup()
    samples = datamodule.train_set.samples
    order = torch.randperm(len(samples), generator=torch.Generator().manual_seed(seed))[:n].tolist()
    spec = datamodule.config.reference.train
    return build_dataset(spec, datamodule.eval_transform, None, [samples[i] for i in sorted(order)],
                         "data.reference.train")


def _block(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """``[start, stop)`` of process ``rank``'s contiguous share of ``n`` examples."""
    return n * rank // world_size, n * (rank + 1) // world_size


class FisherPath:
    """A :data:`~wiseft.sweep.callback.PathFactory`: estimates both Fishers after fitting and returns the path."""

    def __init__(self, config: FisherConfig, seed: int, output_dir: str | Path | None) -> None:
        """Args:
        config: ``wiseft.fisher``.
        seed: Seeds the subset of examples and the sampled labels.
        output_dir: Run folder the Fishers are stored in (``None``: not stored).
        """
        self.config = config
        self.seed = seed
        self.output_dir = Path(output_dir) if output_dir is not None else None

    def __call__(self, trainer: L.Trainer, pl_module: L.LightningModule, theta_0: dict[str, torch.Tensor],
                 theta_1: dict[str, torch.Tensor]) -> WeightPath:
        datamodule = trainer.datamodule
        if not isinstance(datamodule, WiSEFTDataModule):
            raise TypeError("the Fisher path needs the run's WiSEFTDataModule")
        dataset = fisher_examples(datamodule, self.config.examples, self.seed)
        fishers = [self._fisher(trainer, pl_module.model, theta, dataset, name)
                   for name, theta in (("zeroshot", theta_0), ("finetuned", theta_1))]
        return WeightPath(FISHER, theta_0, theta_1, FisherMix(*fishers, floor=self.config.floor))

    def _describe(self, theta: dict[str, torch.Tensor], examples: int) -> dict[str, Any]:
        return {"examples": examples, "labels": self.config.labels, "seed": self.seed,
                "weights": fingerprint(theta, {}, [], {})}

    def _fisher(self, trainer: L.Trainer, model: torch.nn.Module, theta: dict[str, torch.Tensor],
                dataset: LabeledImageDataset, name: str) -> dict[str, torch.Tensor]:
        describe = self._describe(theta, len(dataset))
        path = fisher_file(self.output_dir, name) if self.output_dir is not None else None
        if path is not None and path.is_file():
            try:
                fisher, meta = load_fisher(path)
                if all(meta.get(k) == v for k, v in describe.items()):
                    log.info("Fisher of the %s weights read from %s", name, path)
                    return fisher
            except CheckpointError as err:
                log.warning("estimating the Fisher again: %s", err)
        rank, world_size = trainer.global_rank, trainer.world_size
        start, stop = _block(len(dataset), rank, world_size)
        config = trainer.datamodule.config
        loader = DataLoader(Subset(dataset, range(start, stop)), batch_size=config.eval_batch_size or config.batch_size,
                            num_workers=config.num_workers)
        device = trainer.strategy.root_device
        home = next(model.parameters()).device
        model.to(device)
        try:
            with step(f"Fisher of the {name} weights ({len(dataset)} examples)", total=stop - start) as advance:
                sums, count = fisher_sums(model, theta, loader, stop - start, labels=self.config.labels,
                                          seed=self.seed, first_index=start, device=device, chunk=self.config.chunk,
                                          on_batch=advance)
        finally:
            model.to(home)
        if count != stop - start:
            raise RuntimeError(f"the Fisher read {count} examples of the {stop - start} expected")
        keys = list(sums)
        # One reduction for every parameter's sums: each process holds a block of the examples.
        flat = torch.cat([sums[k].flatten() for k in keys]).to(device)
        flat = trainer.strategy.reduce(flat, reduce_op="sum").cpu()
        total = len(dataset)
        fisher, offset = {}, 0
        for k in keys:
            n = sums[k].numel()
            fisher[k] = (flat[offset:offset + n] / total).view_as(sums[k])
            offset += n
        if path is not None and trainer.is_global_zero:
            save_fisher(fisher, path, describe)
        log.info("Fisher of the %s weights: %d examples, %d tensors", name, total, len(fisher))
        return fisher

