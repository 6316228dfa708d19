"""The weight-space sweep at the compute floor: every image decoded once, every alpha evaluated on it.

The reference implementation rebuilds the interpolated model for one alpha, then runs the whole evaluation
(decoding and transforming every image again) before moving to the next alpha, so a sweep of N alphas decodes
each image N times. Here decoded batches are held in a bounded cache (a *block*, on the evaluation device); every
alpha's model is written into the module in place (:func:`~wiseft.methods.interpolate.interpolate_into`) and run
over the block before the next block is decoded. A sweep then costs one decode, N forward passes, and N in-place
interpolations per block (one fewer when consecutive blocks visit the grid in opposite directions).

Several weight-space methods (WiSE-FT's interpolation, a Fisher-weighted merge, ...) are *paths*: families of
models indexed by alpha that share the decoded block. The output-space ensemble of the first path's endpoints,
``lerp(logits_0, logits_1, alpha)``, costs no forward pass at all: the endpoint logits of each block are kept
while the block is evaluated, then mixed for every alpha. Each evaluation reduces to additive integer statistics
(:mod:`wiseft.sweep.stats`: top-1, NLL, calibration bins), exact under any sharding.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader

from wiseft.data.projection import projector
from wiseft.methods.interpolate import StateDict, interpolate_into
from wiseft.runtime.distributed import Reduce, no_reduce
from wiseft.sweep.logits import mixed_logit_stats
from wiseft.sweep.stats import DEFAULT_BINS, logit_stats, width
from wiseft.sweep.summary import Columns, Row, rows_from_stats, sweep_alphas

#: Default bound on the decoded images held at once (bytes).
DEFAULT_CACHE_BYTES = 1 << 30

@dataclass(frozen=True)
class WeightPath:
    """A family of models indexed by alpha, written into the evaluated module in place.

    Attributes:
        name: The method's name in the results (``wiseft``, ``fisher``, ...).
        theta_0: The alpha = 0 endpoint (moved to the evaluation device once).
        theta_1: The alpha = 1 endpoint.
        mix: Writes the model of ``alpha`` into the module: ``mix(module, theta_0, theta_1, alpha)``; WiSE-FT's
            :func:`~wiseft.methods.interpolate.interpolate_into` by default.
    """

    name: str
    theta_0: StateDict
    theta_1: StateDict
    mix: Callable[[torch.nn.Module, StateDict, StateDict, float], None] = interpolate_into


#: The name of the output-space ensemble's rows.
ENSEMBLE = "ensemble"


def _on_device(state: StateDict, device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v if v.device == device else v.to(device) for k, v in state.items()}


def method_names(paths: Sequence[WeightPath], ensemble: bool) -> list[str]:
    """The methods of :func:`sweep_stats`' first dimension, in order."""
    return [p.name for p in paths] + ([ENSEMBLE] if ensemble else [])


@torch.no_grad()
def sweep_stats(
    model: torch.nn.Module,
    paths: Sequence[WeightPath],
    grid: Sequence[float],
    loaders: Sequence[Iterable],
    device: torch.device | str = "cpu",
    *,
    ensemble: bool = False,
    weight_space: bool = True,
    bins: int = DEFAULT_BINS,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
    forward_context: Callable[[], AbstractContextManager] = contextlib.nullcontext,
    on_batch: Callable[[int], None] | None = None,
    done: Mapping[int, torch.Tensor] | None = None,
    on_dataset: Callable[[int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Statistics of every path's model at every alpha of ``grid`` on every loader, each image decoded once.

    ``model``'s weights are overwritten (the caller restores them). The endpoints are moved to ``device`` once;
    WiSE-FT's in-place interpolation itself allocates nothing when they share the module's device and dtype.

    Args:
        model: Maps images to reference-class logits; its state dict has the endpoints' keys.
        paths: The weight-space methods to evaluate.
        grid: The alphas (with ``ensemble``, it must hold 0 and 1).
        loaders: One loader per dataset, yielding ``(images, labels)``; a loader's ``dataset`` may carry a
            ``projection`` (labels are in the dataset's own class space).
        device: Where to evaluate.
        ensemble: Also evaluate the output-space ensemble of the first path's endpoints.
        weight_space: Evaluate the paths over the grid; ``False`` (with ``ensemble``) evaluates the output-space
            ensemble alone: two forward passes per image (the first path's endpoints), whatever the grid.
        bins: Calibration bins (:mod:`wiseft.sweep.stats`); 0 counts top-1 only.
        cache_bytes: Bound on the decoded images held at once; larger blocks mean fewer weight writes.
        forward_context: Entered around forward passes (e.g. the trainer's autocast).
        on_batch: Called with the number of images of each decoded batch (progress reporting).
        done: Loader index -> its ``(methods, len(grid), width)`` statistics from an earlier, interrupted sweep:
            those loaders are not read again (a resumable sweep, see :mod:`wiseft.sweep.progress`).
        on_dataset: Called with a loader's index and its final ``(methods, len(grid), width)`` CPU statistics as
            soon as every method and alpha has been evaluated on all of its images.

    Returns:
        ``(methods, len(grid), len(loaders), width(bins))`` int64 tensor on the CPU; methods are
        :func:`method_names` ``(paths, ensemble)``, or the ensemble alone without ``weight_space``.
    """
    device = torch.device(device)
    grid = [float(a) for a in grid]
    if ensemble and not {0.0, 1.0} <= set(grid):
        raise ValueError("the output-space ensemble needs alpha 0 and 1 in the grid")
    if not weight_space:
        if not ensemble:
            raise ValueError("nothing to evaluate: neither weight space nor the output-space ensemble")
        paths = paths[:1]
    endpoints = [(_on_device(p.theta_0, device), _on_device(p.theta_1, device)) for p in paths]
    project = [projector(getattr(getattr(ld, "dataset", None), "projection", None), device) for ld in loaders]
    num_methods = len(paths) + int(ensemble)
    stats = torch.zeros(num_methods, len(grid), len(loaders), width(bins), dtype=torch.long, device=device)
    for j, previous in (done or {}).items():
        stats[:, :, j] = previous.to(device)
    block: list[tuple[int, torch.Tensor, torch.Tensor]] = []
    ends = {grid.index(0.0): 0, grid.index(1.0): 1} if ensemble else {}
    plan = [(p, i) for p in range(len(paths)) for i in range(len(grid)) if weight_space or i in ends]
    state: dict = {"current": None, "reverse": False, "bytes": 0}
    read: list[int] = []  # loaders read to the end whose last images may still wait in the block

    def report_finished() -> None:
        if on_dataset is not None:
            for j in read:
                on_dataset(j, stats[:, :, j].cpu().clone())
        read.clear()

    def evaluate_block() -> None:
        kept: dict[tuple[int, int], torch.Tensor] = {}  # (block item, endpoint) -> raw logits, for the ensemble
        for p, i in reversed(plan) if state["reverse"] else plan:
            if state["current"] != (p, i):
                paths[p].mix(model, *endpoints[p], grid[i])
                state["current"] = (p, i)
            # Inference mode (no autograd bookkeeping at all) for the forward passes only: the in-place
            # writes above must stay outside it to keep the parameters ordinary tensors.
            with torch.inference_mode(), forward_context():
                for b, (j, images, labels) in enumerate(block):
                    logits = model(images)
                    stats[p, i, j] += logit_stats(project[j](logits), labels, bins)
                    if p == 0 and i in ends:
                        kept[b, ends[i]] = logits.float()
        if ensemble:
            with torch.inference_mode():
                for b, (j, _, labels) in enumerate(block):
                    projection = getattr(getattr(loaders[j], "dataset", None), "projection", None)
                    stats[-1, :, j] += mixed_logit_stats(kept[b, 0], kept[b, 1], labels, grid, projection,
                                                         bins).to(device)
        # The next block starts where this one ended, saving one weight write.
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
    return (stats if weight_space else stats[-1:]).cpu()


def weight_sweep_counts(
    model: torch.nn.Module,
    theta_0: StateDict,
    theta_1: StateDict,
    grid: Sequence[float],
    loaders: Sequence[Iterable],
    device: torch.device | str = "cpu",
    cache_bytes: int = DEFAULT_CACHE_BYTES,
) -> torch.Tensor:
    """WiSE-FT's top-1 counts alone: ``(len(grid), len(loaders), 2)`` ``(correct, total)`` (see :func:`sweep_stats`)."""
    paths = [WeightPath("wiseft", theta_0, theta_1)]
    return sweep_stats(model, paths, grid, loaders, device, bins=0, cache_bytes=cache_bytes)[0]


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
    ensemble: bool = True,
    bins: int = DEFAULT_BINS,
    reduce: Reduce = no_reduce,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
    forward_context: Callable[[], AbstractContextManager] = contextlib.nullcontext,
) -> dict[str, list[Row]]:
    """Evaluate WiSE-FT, ``(1 - alpha) * theta_0 + alpha * theta_1``, and the output-space ensemble on every loader.

    Each image is decoded once for the whole grid. ``model``'s weights are overwritten; the caller restores them.
    Under several processes, each passes its own unpadded shard of every dataset and ``reduce`` sums the integer
    statistics, so the results are exactly those of one process.

    Args:
        model: Module whose state dict has the keys of ``theta_0``.
        theta_0: Zero-shot weights.
        theta_1: Fine-tuned weights.
        alphas: Mixing coefficients (evaluated as :func:`~wiseft.sweep.summary.sweep_alphas`).
        loaders: Column name -> loader, for every column of ``columns``.
        columns: Roles of the columns.
        device: Where to evaluate.
        on_row: Called with each finished WiSE-FT row (progress reporting).
        ensemble: Also report the output-space ensemble (rows of method ``ensemble``).
        bins: Calibration bins (0: top-1 only).
        reduce: Sums a statistics tensor over processes.
        cache_bytes: Bound on the decoded images held at once.
        forward_context: Entered around forward passes (e.g. the trainer's autocast).

    Returns:
        Method -> one row per alpha: ``alpha``, each dataset's top-1, the averages and calibration columns.
    """
    grid = sweep_alphas(alphas)
    paths = [WeightPath("wiseft", theta_0, theta_1)]
    stats = sweep_stats(model, paths, grid, [loaders[c] for c in columns.all], device, ensemble=ensemble, bins=bins,
                        cache_bytes=cache_bytes, forward_context=forward_context)
    curves = rows_from_stats(grid, reduce(stats.to(device)).cpu(), columns, method_names(paths, ensemble))
    if on_row is not None:
        for row in curves["wiseft"]:
            on_row(row)
    return curves
