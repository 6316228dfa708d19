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

from wiseft.data.projection import ClassProjection, projector
from wiseft.sweep import stats as _stats

#: Rows processed at once; bounds the ``O(chunk * C)`` temporaries.
CHUNK_ROWS = 2048
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


def candidates(logits_0: torch.Tensor, logits_1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rows, classes)`` of the classes that can be the top-1 of some alpha in ``[0, 1]``."""
    rows = torch.arange(len(logits_0), device=logits_0.device)
    k0, k1 = logits_0.argmax(dim=-1), logits_1.argmax(dim=-1)
    scale = max(float(torch.linalg.vector_norm(logits_0, float("inf"))),
                float(torch.linalg.vector_norm(logits_1, float("inf"))))
    tol = SLACK * (scale + 1.0)
    # The endpoint winners' lines, at alpha = 0 (a) and alpha = 1 (b).
    a0, b0, a1, b1 = logits_0[rows, k0], logits_1[rows, k0], logits_0[rows, k1], logits_1[rows, k1]
    # Cheap necessary condition (a few comparisons per logit): above k0's line at one end, and above k1's.
    maybe = logits_0 >= (a0 - tol)[:, None]
    maybe |= logits_1 >= (b0 - tol)[:, None]
    above_k1 = logits_0 >= (a1 - tol)[:, None]
    above_k1 |= logits_1 >= (b1 - tol)[:, None]
    maybe &= above_k1
    r, c = maybe.nonzero(as_tuple=True)
    # The exact test on the few that pass: above both lines at a common alpha.
    x0, x1, t = logits_0[r, c], logits_1[r, c], torch.full_like(logits_0[r, c], tol)
    lo0, hi0 = _interval(x0 - a0[r], x1 - b0[r], t)
    lo1, hi1 = _interval(x0 - a1[r], x1 - b1[r], t)
    keep = (torch.maximum(lo0, lo1) <= torch.minimum(hi0, hi1) + SLACK) | (c == k0[r]) | (c == k1[r])
    return r[keep], c[keep]


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
    labels = labels.to(device)
    found = []
    for start in range(0, len(labels), CHUNK_ROWS):
        l0, l1 = logits_0[start:start + CHUNK_ROWS].float(), logits_1[start:start + CHUNK_ROWS].float()
        if projection is not None:
            l0, l1 = l0[:, ids], l1[:, ids]
        rows, cols = candidates(l0, l1)
        found.append((rows + start, cols, l0[rows, cols], l1[rows, cols]))
    rows, cols, v0, v1 = (torch.cat(parts) for parts in zip(*found, strict=True))
    weights = torch.tensor([float(a) for a in grid], device=device)
    correct = torch.zeros(len(grid), dtype=torch.long, device=device)
    for bucket_rows, b0, b1, targets in _buckets(rows, cols, v0, v1, target_of, len(labels)):
        correct += _bucket_correct(b0, b1, targets, labels[bucket_rows], weights)
    counts = torch.zeros(len(grid), 2, dtype=torch.long)
    counts[:, 0] = correct.cpu()
    counts[:, 1] = len(labels)
    return counts


def _buckets(rows: torch.Tensor, cols: torch.Tensor, v0: torch.Tensor, v1: torch.Tensor, target_of: torch.Tensor,
             num_rows: int):
    """Rows grouped by candidate count (next power of two), each group as dense ``(n, width)`` tensors.

    Candidates are ordered by (target, class) within a row; padding is the most negative finite float, which
    never wins (an infinite pad would make lerp return NaN, which argmax picks).
    """
    target = target_of[cols]
    order = torch.argsort((rows * (int(target_of.max()) + 1) + target) * (int(cols.max()) + 1) + cols)
    rows, cols, v0, v1, target = rows[order], cols[order], v0[order], v1[order], target[order]
    per_row = torch.bincount(rows, minlength=num_rows)
    position = torch.arange(len(rows), device=rows.device) - (torch.cumsum(per_row, 0) - per_row)[rows]
    width_of = torch.where(per_row > 1, 2 ** torch.ceil(torch.log2(per_row.clamp(min=1).double())).long(), 1)
    pad = torch.finfo(v0.dtype).min
    for width in torch.unique(width_of[per_row > 0]).tolist():
        members = (width_of == width) & (per_row > 0)
        bucket_rows = members.nonzero(as_tuple=True)[0]
        slot = torch.full((num_rows,), -1, dtype=torch.long, device=rows.device)
        slot[bucket_rows] = torch.arange(len(bucket_rows), device=rows.device)
        take = members[rows]
        r, p = slot[rows[take]], position[take]
        d0 = torch.full((len(bucket_rows), width), pad, device=v0.device)
        d1 = torch.full((len(bucket_rows), width), pad, device=v0.device)
        dt = torch.full((len(bucket_rows), width), -1, dtype=torch.long, device=v0.device)
        d0[r, p], d1[r, p], dt[r, p] = v0[take], v1[take], target[take]
        yield bucket_rows, d0, d1, dt


#: Bound on the ``alphas x rows x width`` values evaluated at once.
MAX_ELEMENTS = 1 << 24


def _bucket_correct(v0: torch.Tensor, v1: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor,
                    weights: torch.Tensor) -> torch.Tensor:
    """Correct predictions per alpha for one bucket, every alpha at once (in slices bounded by MAX_ELEMENTS)."""
    n, width = v0.shape
    step = max(1, MAX_ELEMENTS // max(1, n * width))
    out = []
    for i in range(0, len(weights), step):
        w = weights[i:i + step, None, None]
        # argmax returns the first maximum: candidates are ordered by target class, so exact ties go to the
        # lowest target, as argmax over the projected logits does.
        winner = torch.lerp(v0.expand(len(w), n, width), v1.expand(len(w), n, width), w).argmax(dim=-1)
        predicted = targets.gather(1, winner.t()).t()  # (alphas, n)
        out.append((predicted == labels).sum(dim=-1))
    return torch.cat(out)


@torch.no_grad()
def mixed_logit_stats(
    logits_0: torch.Tensor,
    logits_1: torch.Tensor,
    labels: torch.Tensor,
    grid: Sequence[float],
    projection: ClassProjection | None = None,
    bins: int = 0,
) -> torch.Tensor:
    """Statistics (:mod:`wiseft.sweep.stats`) of ``lerp(logits_0, logits_1, alpha)`` for every alpha.

    Top-1 alone (``bins=0``) costs the same whatever the grid (:func:`logit_sweep_counts`); calibration needs every
    alpha's full softmax, evaluated ``CHUNK_ROWS`` rows at a time.

    Returns:
        ``(len(grid), stats.width(bins))`` int64 tensor on the CPU.
    """
    if bins == 0:
        return logit_sweep_counts(logits_0, logits_1, labels, grid, projection)
    project = projector(projection, logits_0.device)
    labels = labels.to(logits_0.device)
    out = torch.zeros(len(grid), _stats.width(bins), dtype=torch.long, device=logits_0.device)
    for start in range(0, len(labels), CHUNK_ROWS):
        l0, l1 = logits_0[start:start + CHUNK_ROWS].float(), logits_1[start:start + CHUNK_ROWS].float()
        chunk_labels = labels[start:start + CHUNK_ROWS]
        for i, alpha in enumerate(grid):
            out[i] += _stats.logit_stats(project(torch.lerp(l0, l1, float(alpha))), chunk_labels, bins)
    return out.cpu()
