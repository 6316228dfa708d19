"""Exact evaluation across processes: unpadded shards and summed integer counts.

Lightning's ``DistributedSampler`` pads a dataset whose size is not divisible by the number of processes with
repeated samples, so an accuracy computed over the padded shards counts some images twice. Here every
evaluation image lands in exactly one shard, and each process contributes integer ``(correct, total)`` counts
that are summed across processes, so N processes give the same accuracy as one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sized

import torch
from torch.utils.data import DistributedSampler

#: Sums a tensor over every process of the job (``Strategy.reduce(t, reduce_op="sum")`` under Lightning).
Reduce = Callable[[torch.Tensor], torch.Tensor]


def shard_indices(size: int, rank: int, world_size: int) -> range:
    """The indices of process ``rank`` out of ``world_size``: strided, disjoint, covering ``range(size)``.

    Raises:
        ValueError: If ``rank`` is outside ``[0, world_size)``.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside [0, {world_size})")
    return range(rank, size, world_size)


class UnpaddedDistributedSampler(DistributedSampler):
    """An ordered shard of an evaluation set, without the padding of :class:`DistributedSampler`.

    Shards differ in length by at most one. It subclasses ``DistributedSampler`` so that Lightning keeps it
    instead of injecting its own padded sampler.
    """

    def __init__(self, dataset: Sized, num_replicas: int, rank: int) -> None:
        """Args:
        dataset: The evaluation set.
        num_replicas: Number of processes.
        rank: This process's global rank.
        """
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        self.indices = shard_indices(len(dataset), rank, num_replicas)
        self.num_samples = len(self.indices)
        self.total_size = len(dataset)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def no_reduce(tensor: torch.Tensor) -> torch.Tensor:
    """The single-process :data:`Reduce`: the tensor itself."""
    return tensor
