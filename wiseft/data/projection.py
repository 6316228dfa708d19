"""Class projections: scoring a model with C reference classes on a dataset with fewer, or coarser, classes.

A projection is a list of groups, one per target class: group ``j`` lists the reference-class indices whose
logits vote for target class ``j``, and the target logit is their maximum.
- ImageNet-R/-A (200 of the 1000 classes): singleton groups, i.e. the logits restricted to those classes.
- ObjectNet (113 classes, several ImageNet classes each): max-pooling over each group.
- The identity projection is ``None``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ClassProjection:
    """Maps reference-class logits to target-class logits by max-pooling over groups.

    Attributes:
        groups: ``groups[j]`` holds the reference-class indices that make up target class ``j``.
        num_reference_classes: Number of reference classes the logits have.
    """

    groups: tuple[tuple[int, ...], ...]
    num_reference_classes: int

    def __post_init__(self) -> None:
        if not self.groups:
            raise ValueError("a class projection needs at least one target class")
        for j, group in enumerate(self.groups):
            if not group:
                raise ValueError(f"target class {j} of the projection maps to no reference class")
            bad = [i for i in group if not 0 <= i < self.num_reference_classes]
            if bad:
                raise ValueError(f"target class {j} maps to reference class {bad[0]}, outside "
                                 f"[0, {self.num_reference_classes})")

    @classmethod
    def subset(cls, indices: Sequence[int], num_reference_classes: int) -> ClassProjection:
        """Projection that keeps the logits of ``indices`` (target class j = reference class indices[j])."""
        return cls(tuple((int(i),) for i in indices), num_reference_classes)

    @classmethod
    def many_to_one(cls, groups: Sequence[Sequence[int]], num_reference_classes: int) -> ClassProjection:
        """Projection where target class j takes the max over the reference classes ``groups[j]``."""
        return cls(tuple(tuple(int(i) for i in g) for g in groups), num_reference_classes)

    @property
    def num_classes(self) -> int:
        """Number of target classes."""
        return len(self.groups)

    def index_tensor(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """``(num_classes, max_group_size)`` long tensor of reference indices, padded with -1."""
        width = max(len(g) for g in self.groups)
        index = torch.full((len(self.groups), width), -1, dtype=torch.long)
        for j, group in enumerate(self.groups):
            index[j, : len(group)] = torch.tensor(group, dtype=torch.long)
        return index.to(device)


def project_logits(logits: torch.Tensor, projection: ClassProjection | None) -> torch.Tensor:
    """Turn ``(N, C_ref)`` logits into ``(N, C_target)`` logits.

    Args:
        logits: Logits over the reference classes.
        projection: The dataset's projection, or ``None`` for the identity.

    Returns:
        ``logits`` itself for the identity; otherwise, for each target class, the max over its group.
    """
    if projection is None:
        return logits
    if logits.shape[-1] != projection.num_reference_classes:
        raise ValueError(f"logits have {logits.shape[-1]} classes but the projection expects "
                         f"{projection.num_reference_classes}")
    return projector(projection, logits.device)(logits)


def projector(projection: ClassProjection | None,
              device: torch.device | str = "cpu") -> Callable[[torch.Tensor], torch.Tensor]:
    """:func:`project_logits` as a function of the logits alone, with the projection's index built once."""
    if projection is None:
        return lambda logits: logits
    index = projection.index_tensor(device)
    gather, pad = index.clamp(min=0), index < 0

    def project(logits: torch.Tensor) -> torch.Tensor:
        return logits[:, gather].masked_fill(pad, float("-inf")).amax(dim=-1)

    return project
