"""Shared pieces of the benchmarks: a small random CLIP, generated JPEG trees, timing."""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import open_clip
import torch
from PIL import Image

#: A ViT small enough for a CPU benchmark yet dominated by matrix work: 64x64 images, 8x8 patches (65 tokens),
#: width 256, 4 layers (~3.2M image-tower parameters), plus a 2-layer text tower for the zero-shot head.
BENCH_VIT = {
    "embed_dim": 256,
    "vision_cfg": {"image_size": 64, "layers": 4, "width": 256, "head_width": 64, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 128, "heads": 2, "layers": 2},
}


def register_bench_model(name: str = "bench-vit", config: dict | None = None) -> str:
    """Register the benchmark model config with open_clip (random weights; nothing is downloaded)."""
    folder = Path(tempfile.mkdtemp(prefix="wiseft-bench-"))
    (folder / f"{name}.json").write_text(json.dumps(config or BENCH_VIT))
    open_clip.add_model_config(folder)
    return name


def make_jpeg_tree(root: Path, classes: list[str], per_class: int, size: tuple[int, int] = (500, 375),
                   seed: int = 0) -> Path:
    """An ImageFolder tree of ``(width, height)`` JPEGs (smooth colour fields with noise; ImageNet's typical size)."""
    rng = np.random.default_rng(seed)
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32) / max(size)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            base = rng.uniform(0, 255, 3) * (1 + 0.5 * np.sin(6 * xx[..., None] + c + i) * np.cos(4 * yy[..., None]))
            img = np.clip(base + rng.normal(0, 20, (height, width, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / name / f"{i}.jpg", quality=90)
    return root


def set_threads(n: int) -> None:
    """Pin the intra-op threads (a shared machine gives steadier timings on fewer)."""
    torch.set_num_threads(n)
    os.environ["OMP_NUM_THREADS"] = str(n)


def timed(fn: Callable[[], object]) -> float:
    """Wall seconds of one call."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def best_of(fn: Callable[[], object], repeat: int) -> float:
    """The fastest of ``repeat`` calls (the least disturbed by other load)."""
    return min(timed(fn) for _ in range(repeat))
