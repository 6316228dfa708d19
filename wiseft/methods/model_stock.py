"""Model Stock (Jang, Yun and Han, ECCV 2024: "Model Stock: All we need is just a few fine-tuned models").

Fine-tuned weights of one pretrained model lie near a thin shell around a centre; the average of N fine-tuned
runs, pulled back towards the pretrained weights ``w_0`` by a per-layer ratio computed from the angle between the
runs, approximates that centre without any search:

    cos(theta) = <w_1 - w_0, w_2 - w_0> / (|w_1 - w_0| |w_2 - w_0| + eps)
    t          = N cos(theta) / (1 + (N - 1) cos(theta) + eps)
    w_H        = t * mean(w_1 .. w_N) + (1 - t) * w_0

Facts taken from the authors' evaluation code (the notebook published with ``naver-ai/model-stock``, whose
``compute_angle`` / ``compute_ratio`` / ``merge`` functions circulate verbatim): a "layer" is one state-dict entry
(every weight and every bias has its own ratio, LayerNorms and embeddings included), the vectors are flattened and
compared in float32, ``eps = 1e-8`` in both denominators, the cosine is clamped to [-1, 1], ``t`` is not clamped,
and entries that fine-tuning does not touch keep the plain average (for CLIP they list the text tower's keys; the
classifier here has no text tower, so every floating entry gets a ratio; an untouched one has cosine 0, hence
``t = 0`` and ``w_0``, which is also its average). That code handles two runs; for N > 2 the paper keeps one
angle without saying how to measure it, and this module uses the mean of the pairwise cosines (as mergekit does).
Tensors that are not floating point are taken from the first fine-tuned run.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch

from wiseft.methods.interpolate import StateDict, check_compatible

#: The epsilon of the authors' code, in the cosine's and in the ratio's denominator.
EPS = 1e-8


def layer_cosine(w_0: torch.Tensor, finetuned: Sequence[torch.Tensor]) -> float:
    """Mean pairwise cosine between the fine-tuned runs' offsets ``w_i - w_0`` of one layer (flattened, float32)."""
    offsets = [(w.detach().float() - w_0.detach().float()).flatten() for w in finetuned]
    cosines = []
    for a, b in itertools.combinations(offsets, 2):
        cos = torch.dot(a, b) / (torch.sqrt(a.dot(a) * b.dot(b)) + EPS)
        cosines.append(float(cos.clamp(-1.0, 1.0)))
    return sum(cosines) / len(cosines)


def stock_ratio(cos: float, n: int) -> float:
    """Model Stock's interpolation ratio ``t = n cos / (1 + (n - 1) cos + eps)`` towards the average of ``n`` runs."""
    return n * cos / (1.0 + (n - 1) * cos + EPS)


def stock_ratios(theta_0: StateDict, finetuned: Sequence[StateDict]) -> dict[str, float]:
    """Per-layer ratio ``t`` of every floating state-dict entry (see the module docstring).

    Raises:
        ValueError: Fewer than two fine-tuned runs (the angle needs two).
        CheckpointError: A run's keys or shapes differ from ``theta_0``'s (naming it).
    """
    if len(finetuned) < 2:
        raise ValueError(f"Model Stock needs at least two fine-tuned runs, got {len(finetuned)}")
    for i, state in enumerate(finetuned):
        check_compatible(theta_0, state, names=("zero-shot", f"fine-tuned run {i}"))
    n = len(finetuned)
    return {key: stock_ratio(layer_cosine(w_0, [s[key] for s in finetuned]), n)
            for key, w_0 in theta_0.items() if w_0.is_floating_point()}


def model_stock(theta_0: StateDict, finetuned: Sequence[StateDict]) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Model Stock's merged weights and the per-layer ratios that made them.

    Args:
        theta_0: The pretrained (zero-shot) weights the runs were fine-tuned from.
        finetuned: Two or more fine-tuned runs' state dicts.

    Returns:
        ``(weights, ratios)``: ``w_H = lerp(w_0, mean(w_i), t)`` for every floating entry, in its own dtype (the
        arithmetic in float32 at least), and ``t`` by key.
    """
    ratios = stock_ratios(theta_0, finetuned)
    merged: dict[str, torch.Tensor] = {}
    for key, w_0 in theta_0.items():
        if key not in ratios:
            merged[key] = finetuned[0][key].clone()
            continue
        dtype = torch.promote_types(w_0.dtype, torch.float32)
        average = sum(s[key].to(dtype) for s in finetuned) / len(finetuned)
        merged[key] = torch.lerp(w_0.to(dtype), average, ratios[key]).to(w_0.dtype)
    return merged, ratios
