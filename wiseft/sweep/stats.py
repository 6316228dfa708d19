"""Additive evaluation statistics: top-1, negative log-likelihood and calibration bins, as integers.

Every evaluation in the sweep reduces a batch of logits to one vector of int64 statistics per (method, alpha,
dataset): ``correct``, ``total``, the summed NLL, and for each confidence bin its count, summed confidence and
correct predictions. Sums of integers do not depend on their order, so the statistics of shards evaluated on
several processes, or of an interrupted sweep and its relaunch, add up to exactly those of one pass. Real-valued
quantities are held in fixed point (:data:`FIXED_POINT` units per 1.0); the rounding is below 1e-9 per example.

The binning is torchmetrics' (``multiclass_calibration_error``, ``norm="l1"``): bin boundaries
``linspace(0, 1, bins + 1)``, a confidence ``c`` goes to bin ``bucketize(c, boundaries, right=True) - 1`` (a
confidence of exactly 1.0 has a bin of its own), and ``ECE = sum_b |correct_b - confidence_b| / total``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: Fixed-point units per 1.0 for the real-valued sums (NLL, confidence).
FIXED_POINT = 1 << 32
#: Default number of calibration bins (torchmetrics' default).
DEFAULT_BINS = 15

CORRECT, TOTAL, NLL = 0, 1, 2
_HEAD = 3


def width(bins: int) -> int:
    """Length of a statistics vector with ``bins`` calibration bins (``bins=0``: top-1 only)."""
    return 2 if bins == 0 else _HEAD + 3 * (bins + 1)


def bins_of(stats: torch.Tensor) -> int:
    """The number of calibration bins a statistics tensor (last dimension) was made with."""
    k = stats.shape[-1]
    return 0 if k == 2 else (k - _HEAD) // 3 - 1


@torch.no_grad()
def logit_stats(logits: torch.Tensor, labels: torch.Tensor, bins: int = DEFAULT_BINS) -> torch.Tensor:
    """The statistics of one batch.

    Args:
        logits: ``(N, K)`` logits in the dataset's own class space (already projected).
        labels: ``(N,)`` labels.
        bins: Calibration bins; ``0`` computes top-1 counts only.

    Returns:
        ``(width(bins),)`` int64 tensor, on ``logits``' device.
    """
    out = torch.zeros(width(bins), dtype=torch.long, device=logits.device)
    predicted = logits.argmax(dim=-1)
    hit = predicted == labels
    out[CORRECT] = hit.sum()
    out[TOTAL] = labels.numel()
    if bins == 0 or labels.numel() == 0:
        return out
    log_probs = F.log_softmax(logits.float(), dim=-1)
    nll = -log_probs.gather(1, labels[:, None]).squeeze(1)
    confidence = log_probs.gather(1, predicted[:, None]).squeeze(1).exp()
    out[NLL] = _fixed(nll.double()).sum()
    boundaries = torch.linspace(0, 1, bins + 1, dtype=confidence.dtype, device=confidence.device)
    index = torch.bucketize(confidence, boundaries, right=True) - 1
    n = bins + 1
    base = _HEAD
    out[base:base + n] = torch.bincount(index, minlength=n)
    out[base + n:base + 2 * n] = torch.zeros(n, dtype=torch.long, device=logits.device).scatter_add_(
        0, index, _fixed(confidence.double()))
    out[base + 2 * n:base + 3 * n] = torch.zeros(n, dtype=torch.long, device=logits.device).scatter_add_(
        0, index, hit.long())
    return out


def _fixed(values: torch.Tensor) -> torch.Tensor:
    return torch.round(values * FIXED_POINT).long()


def top1(stats: torch.Tensor) -> torch.Tensor:
    """Top-1 accuracy in percent (float64), over the last dimension."""
    return 100.0 * stats[..., CORRECT].double() / stats[..., TOTAL].double()


def nll(stats: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood in nats (float64); NaN without calibration statistics."""
    if bins_of(stats) == 0:
        return torch.full(stats.shape[:-1], float("nan"), dtype=torch.float64)
    return stats[..., NLL].double() / FIXED_POINT / stats[..., TOTAL].double()


def ece(stats: torch.Tensor) -> torch.Tensor:
    """Expected calibration error (L1, torchmetrics' binning) in percent; NaN without calibration statistics."""
    bins = bins_of(stats)
    if bins == 0:
        return torch.full(stats.shape[:-1], float("nan"), dtype=torch.float64)
    n = bins + 1
    confidence = stats[..., _HEAD + n:_HEAD + 2 * n].double() / FIXED_POINT
    correct = stats[..., _HEAD + 2 * n:_HEAD + 3 * n].double()
    return 100.0 * (correct - confidence).abs().sum(dim=-1) / stats[..., TOTAL].double()
