"""The linear-classifier sweep, at a cost that does not grow with the alpha grid.

When only the head differs between the endpoints (``finetune=linear``), the logits of the interpolated model are
the interpolated logits: ``logits(alpha) = (1 - alpha) * logits_0 + alpha * logits_1`` for the same features. So
two head evaluations give every alpha's logits; what remains is the top-1 of each line bundle at each alpha.

Evaluating all ``C`` logits at every alpha costs ``O(N C)`` per alpha. Instead, a class can win at some alpha only
if its line rises above the lines of both endpoint winners (``argmax logits_0`` and ``argmax logits_1``)
somewhere in ``[0, 1]``; that test is one ``O(N C)`` pass, and it leaves a handful of candidate classes per
sample. Each alpha is then evaluated on the candidates only, with the same ``torch.lerp`` and the same tie rule
(lowest index) as ``argmax`` over all classes, so the counts equal the direct computation's.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from wiseft.data.projection import ClassProjection

#: Rows processed at once; bounds the ``O(chunk * C)`` temporaries.
CHUNK_ROWS = 4096
#: Relative slack of the candidate test: keeps classes within rounding error of winning.
SLACK = 1e-5


def _restrict(projection: ClassProjection | None, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference classes the projection reads, and the target class each one votes for (its first group)."""
    if projection is None:
        ids = torch.arange(num_classes)
        return ids, ids
    first_group: dict[int, int] = {}
    for j, group in enumerate(projection.groups):
        for i in group:
            first_group.setdefault(i, j)
    ids = sorted(first_group)
    return torch.tensor(ids, dtype=torch.long), torch.tensor([first_group[i] for i in ids], dtype=torch.long)


def _interval(d: torch.Tensor, e: torch.Tensor, tol: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Where ``(1 - a) d + a e >= -tol`` holds within ``[0, 1]``, as ``(lo, hi)``; empty when ``lo > hi``."""
    ok_0, ok_1 = d >= -tol, e >= -tol
    cross = (-tol - d) / (e - d).where(e != d, torch.ones_like(d))
    lo = torch.where(ok_0, torch.zeros_like(d), torch.where(ok_1, cross, torch.full_like(d, 2.0)))
    hi = torch.where(ok_1, torch.ones_like(d), torch.where(ok_0, cross, torch.full_like(d, -1.0)))
    return lo, hi


def candidates(logits_0: torch.Tensor, logits_1: torch.Tensor) -> torch.Tensor:
    """``(rows, classes)`` of the classes that can be the top-1 of some alpha in ``[0, 1]``."""
    rows = torch.arange(len(logits_0), device=logits_0.device)
    k0, k1 = logits_0.argmax(dim=-1), logits_1.argmax(dim=-1)
    scale = torch.maximum(logits_0.abs().amax(dim=-1), logits_1.abs().amax(dim=-1))
    tol = (SLACK * (scale + 1.0)).unsqueeze(-1)
    lo0, hi0 = _interval(logits_0 - logits_0[rows, k0, None], logits_1 - logits_1[rows, k0, None], tol)
    lo1, hi1 = _interval(logits_0 - logits_0[rows, k1, None], logits_1 - logits_1[rows, k1, None], tol)
    feasible = torch.maximum(lo0, lo1) <= torch.minimum(hi0, hi1) + SLACK
    feasible[rows, k0] = True
    feasible[rows, k1] = True
    return feasible.nonzero(as_tuple=True)


@torch.no_grad()
def logit_sweep_counts(
    logits_0: torch.Tensor,
    logits_1: torch.Tensor,
    labels: torch.Tensor,
    grid: Sequence[float],
    projection: ClassProjection | None = None,
) -> torch.Tensor:
    """Top-1 counts of ``lerp(logits_0, logits_1, alpha)`` (through the projection) for every alpha.

    Args:
        logits_0: ``(N, C)`` reference-class logits of the zero-shot head.
        logits_1: ``(N, C)`` logits of the fine-tuned head on the same features.
        labels: ``(N,)`` labels in the dataset's own class space.
        grid: The alphas.
        projection: The dataset's class projection (``None``: identity).

    Returns:
        ``(len(grid), 2)`` int64 tensor of ``(correct, total)``.
    """
    if logits_0.shape != logits_1.shape or logits_0.ndim != 2 or len(labels) != len(logits_0):
        raise ValueError(f"logits {tuple(logits_0.shape)} and {tuple(logits_1.shape)} and labels "
                         f"{tuple(labels.shape)} do not match")
    device = logits_0.device
    ids, target_of = _restrict(projection, logits_0.shape[1])
    ids, target_of = ids.to(device), target_of.to(device)
    no_target = torch.iinfo(torch.long).max
    counts = torch.zeros(len(grid), 2, dtype=torch.long)
    counts[:, 1] = len(labels)
    for start in range(0, len(labels), CHUNK_ROWS):
        l0 = logits_0[start:start + CHUNK_ROWS][:, ids].float()
        l1 = logits_1[start:start + CHUNK_ROWS][:, ids].float()
        lab = labels[start:start + CHUNK_ROWS].to(device)
        rows, cols = candidates(l0, l1)
        v0, v1, target = l0[rows, cols], l1[rows, cols], target_of[cols]
        for i, alpha in enumerate(grid):
            value = torch.lerp(v0, v1, float(alpha))
            best = torch.full((len(lab),), float("-inf"), device=device).scatter_reduce(0, rows, value, "amax")
            # Among the classes at the maximum, the one argmax over all classes would pick.
            tied_target = torch.where(value == best[rows], target, torch.full_like(target, no_target))
            predicted = torch.full_like(lab, no_target).scatter_reduce(0, rows, tied_target, "amin")
            counts[i, 0] += int((predicted == lab).sum())
    return counts
