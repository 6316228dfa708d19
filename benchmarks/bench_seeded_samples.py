"""Overhead of per-sample seeding (``SeededSamples``) on image decoding + the open_clip ViT-B-32 train transform.

Run from the repository root: ``python benchmarks/bench_seeded_samples.py``. Prints seeded/plain time, best of 5
alternating passes (1.0 means the seeding is free).
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest import make_tree
from wiseft.data.datasets import LabeledImageDataset, scan_image_folder
from wiseft.models.factory import build_clip
from wiseft.runtime.exact_resume import SeededSamples, mix_seed


def timed(get: Callable[[int], object], n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        get(i)
    return time.perf_counter() - start


def main() -> None:
    torch.set_num_threads(1)
    root = make_tree(Path(tempfile.mkdtemp()) / "tree", per_class=100, size=64)
    samples = scan_image_folder(root, ["blue", "green", "red"])
    bundle = build_clip("ViT-B-32")  # random weights; only its 224 px training transform is used
    plain = LabeledImageDataset(samples, ["blue", "green", "red"], bundle.train_transform)
    seeded = SeededSamples(plain)
    plain_times, seeded_times = [], []
    for _ in range(5):
        plain_times.append(timed(lambda i: plain[i], len(plain)))
        seeded_times.append(timed(lambda i: seeded[(i, mix_seed(0, 0, i))], len(plain)))
    p, s = min(plain_times), min(seeded_times)
    print(f"{len(plain)} samples, best of 5: plain {p:.3f} s, seeded {s:.3f} s, ratio seeded/plain {s / p:.3f}")


if __name__ == "__main__":
    main()
