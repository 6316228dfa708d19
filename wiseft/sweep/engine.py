"""The weight-space sweep at the compute floor: every image decoded once, every alpha evaluated on it.

The reference implementation rebuilds the interpolated model for one alpha, then runs the whole evaluation
(decoding and transforming every image again) before moving to the next alpha, so a sweep of N alphas decodes
each image N times. Here decoded batches are held in a bounded cache (a *block*, on the evaluation device); every
alpha's model is written into the module in place (:func:`~wiseft.methods.interpolate.interpolate_into`) and run
over the block before the next block is decoded. A sweep then costs one decode, N forward passes, and N in-place
interpolations per block (one fewer when consecutive blocks visit the grid in opposite directions).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager

import torch
from torch.utils.data import DataLoader

from wiseft.data.projection import ClassProjection
from wiseft.methods.interpolate import StateDict, interpolate_into
from wiseft.runtime.distributed import Reduce, no_reduce
from wiseft.sweep.summary import Columns, Row, rows_from_counts, sweep_alphas

#: Default bound on the decoded images held at once (bytes).
DEFAULT_CACHE_BYTES = 1 << 30

Projector = Callable[[torch.Tensor], torch.Tensor]


def projector(projection: ClassProjection | None, device: torch.device | str) -> Projector:
    """A function mapping reference-class logits to the dataset's classes, with its index built once."""
    if projection is None:
        return lambda logits: logits
    index = projection.index_tensor(device)
    gather, pad = index.clamp(min=0), index < 0

    def project(logits: torch.Tensor) -> torch.Tensor:
        return logits[:, gather].masked_fill(pad, float("-inf")).amax(dim=-1)

    return project


def _on_device(state: StateDict, device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v if v.device == device else v.to(device) for k, v in state.items()}


@torch.no_grad()
def weight_sweep_counts(
    model: torch.nn.Module,
    theta_0: StateDict,
    theta_1: StateDict,
    grid: Sequence[float],
    loaders: Sequence[Iterable],
    device: torch.device | str = "cpu",
    *,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
    forward_context: Callable[[], AbstractContextManager] = contextlib.nullcontext,
    on_batch: Callable[[int], None] | None = None,
    done: Mapping[int, torch.Tensor] | None = None,
    on_dataset: Callable[[int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Top-1 counts of ``(1 - alpha) * theta_0 + alpha * theta_1`` for every alpha of ``grid`` on every loader.

    ``model``'s weights are overwritten (the caller restores them). The endpoints are moved to ``device`` once;
    the in-place interpolation itself allocates nothing when they share the module's device and dtype.

    Args:
        model: Maps images to reference-class logits; its state dict has the endpoints' keys.
        theta_0: Zero-shot weights.
        theta_1: Fine-tuned weights.
        grid: The alphas.
        loaders: One loader per dataset, yielding ``(images, labels)``; a loader's ``dataset`` may carry a
            ``projection`` (labels are in the dataset's own class space).
        device: Where to evaluate.
        cache_bytes: Bound on the decoded images held at once; larger blocks mean fewer interpolations.
        forward_context: Entered around forward passes (e.g. the trainer's autocast).
        on_batch: Called with the number of images of each decoded batch (progress reporting).
        done: Loader index -> its ``(len(grid), 2)`` counts from an earlier, interrupted sweep: those loaders are
            not read again (a resumable sweep, see :mod:`wiseft.sweep.progress`).
        on_dataset: Called with a loader's index and its final ``(len(grid), 2)`` CPU counts as soon as every
            alpha has been evaluated on all of its images.

    Returns:
        ``(len(grid), len(loaders), 2)`` int64 tensor of ``(correct, total)``, on the CPU.
    """
    device = torch.device(device)
    theta_0, theta_1 = _on_device(theta_0, device), _on_device(theta_1, device)
    project = [projector(getattr(getattr(ld, "dataset", None), "projection", None), device) for ld in loaders]
    counts = torch.zeros(len(grid), len(loaders), 2, dtype=torch.long, device=device)
    for j, previous in (done or {}).items():
        counts[:, j] = previous.to(device)
    block: list[tuple[int, torch.Tensor, torch.Tensor]] = []
    state = {"alpha": None, "reverse": False, "bytes": 0}
    read: list[int] = []  # loaders read to the end whose last images may still wait in the block

    def report_finished() -> None:
        if on_dataset is not None:
            for j in read:
                on_dataset(j, counts[:, j].cpu().clone())
        read.clear()

    def evaluate_block() -> None:
        order = range(len(grid) - 1, -1, -1) if state["reverse"] else range(len(grid))
        for i in order:
            if state["alpha"] != grid[i]:
                interpolate_into(model, theta_0, theta_1, grid[i])
                state["alpha"] = grid[i]
            # Inference mode (no autograd bookkeeping at all) for the forward passes only: the in-place
            # interpolation above must stay outside it to keep the parameters ordinary tensors.
            with torch.inference_mode(), forward_context():
                for j, images, labels in block:
                    predicted = project[j](model(images)).argmax(dim=-1)
                    counts[i, j, 0] += (predicted == labels).sum()
                    counts[i, j, 1] += labels.numel()
        # The next block starts where this one ended, saving one interpolation.
        state["reverse"] = not state["reverse"]
        block.clear()
        state["bytes"] = 0
        report_finished()

    was_training = model.training
    model.eval()
    try:
        for j, loader in enumerate(loaders):
            if done and j in done:
                continue
            for images, labels in loader:
                images = images.to(device, non_blocking=True)
                block.append((j, images, labels.to(device, non_blocking=True)))
                state["bytes"] += images.numel() * images.element_size()
                if on_batch is not None:
                    on_batch(len(labels))
                if state["bytes"] >= cache_bytes:
                    evaluate_block()
            read.append(j)
            if not block:
                report_finished()
        if block:
            evaluate_block()
    finally:
        model.train(was_training)
    return counts.cpu()


def run_sweep(
    model: torch.nn.Module,
    theta_0: StateDict,
    theta_1: StateDict,
    alphas: Sequence[float],
    loaders: Mapping[str, DataLoader],
    columns: Columns,
    device: torch.device | str = "cpu",
    on_row: Callable[[Row], None] | None = None,
    *,
    reduce: Reduce = no_reduce,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
    forward_context: Callable[[], AbstractContextManager] = contextlib.nullcontext,
) -> list[Row]:
    """Evaluate ``(1 - alpha) * theta_0 + alpha * theta_1`` on every loader for every alpha.

    Each image is decoded once for the whole grid (see :mod:`wiseft.sweep.engine`). ``model``'s weights are
    overwritten; the caller restores them. Under several processes, each passes its own unpadded shard of every
    dataset and ``reduce`` sums the integer counts, so the accuracies are exactly those of one process.

    Args:
        model: Module whose state dict has the keys of ``theta_0``.
        theta_0: Zero-shot weights.
        theta_1: Fine-tuned weights.
        alphas: Mixing coefficients (evaluated as :func:`sweep_alphas`).
        loaders: Column name -> loader, for every column of ``columns``.
        columns: Roles of the columns.
        device: Where to evaluate.
        on_row: Called with each finished row (progress reporting).
        reduce: Sums a counts tensor over processes.
        cache_bytes: Bound on the decoded images held at once.
        forward_context: Entered around forward passes (e.g. the trainer's autocast).

    Returns:
        One row per alpha: ``alpha``, each dataset's top-1 and the averages.
    """
    grid = sweep_alphas(alphas)
    counts = weight_sweep_counts(model, theta_0, theta_1, grid, [loaders[c] for c in columns.all], device,
                                 cache_bytes=cache_bytes, forward_context=forward_context)
    rows = rows_from_counts(grid, reduce(counts.to(device)).cpu(), columns)
    if on_row is not None:
        for row in rows:
            on_row(row)
    return rows
