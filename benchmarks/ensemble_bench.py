"""(f) The output-space ensemble: 101 alphas against 2 alphas (goal <= 1.1).

The ensemble's logits are ``lerp(logits_zeroshot, logits_finetuned, alpha)``: the sweep runs the two endpoint
models once per image and mixes their logits for every alpha (:func:`wiseft.sweep.engine.sweep_stats` with
``weight_space=False``), so a finer grid adds only the mixing. Timed here: the whole ensemble sweep, forward
passes included, over pre-decoded images (decoding is the same for every grid), with an ImageNet-sized head
(1000 classes) on one full set and one 200-class subset set (an ImageNet-R-like projection); with calibration
statistics (the default, 15 ECE bins: every alpha's full softmax) and with top-1 alone (a grid-independent
candidate search, :mod:`wiseft.sweep.logits`).

Usage: ``python -m benchmarks.ensemble_bench [--images 512] [--threads 1] [--repeat 3]``.
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import register_bench_model, set_threads, timed
from wiseft.data.projection import ClassProjection
from wiseft.models.classifier import ClassificationHead, ImageClassifier
from wiseft.models.factory import build_clip
from wiseft.sweep.engine import WeightPath, sweep_stats

CLASSES = 1000


class _Set(list):
    """Batches of one evaluation set, with the set's class projection (as the DataModule's loaders carry)."""

    def __init__(self, batches: list, projection: ClassProjection | None) -> None:
        super().__init__(batches)
        self.dataset = type("Dataset", (), {"projection": projection})()


def build(images: int, batch: int = 64):
    """The bench ViT with a 1000-class head, two endpoints, and two sets of pre-decoded images."""
    torch.manual_seed(0)
    bundle = build_clip(register_bench_model())
    head = ClassificationHead(100 * torch.nn.functional.normalize(torch.randn(CLASSES, 256), dim=-1))
    model = ImageClassifier(bundle.model.visual, head).eval()
    theta_0 = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(1)
    theta_1 = {k: v + 0.05 * torch.randn(v.shape, generator=g) for k, v in theta_0.items()}
    subset = ClassProjection.subset(list(range(0, CLASSES, 5)), CLASSES)
    sets = []
    for n_classes, projection in ((CLASSES, None), (subset.num_classes, subset)):
        batches = [(torch.randn(batch, 3, 64, 64, generator=g), torch.randint(0, n_classes, (batch,), generator=g))
                   for _ in range(images // batch)]
        sets.append(_Set(batches, projection))
    return model, [WeightPath("wiseft", theta_0, theta_1)], sets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512, help="images per set (two sets)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    set_threads(args.threads)
    model, paths, sets = build(args.images)
    grids = {2: [0.0, 1.0], 101: [i / 100 for i in range(101)]}

    def ensemble(grid: list[float], bins: int) -> torch.Tensor:
        return sweep_stats(model, paths, grid, sets, ensemble=True, weight_space=False, bins=bins)

    ensemble(grids[2], 15)  # warm-up
    rounds = [{(n, bins): timed(lambda g=g, b=bins: ensemble(g, b)) for n, g in grids.items() for bins in (0, 15)}
              for _ in range(args.repeat)]
    t = {k: min(r[k] for r in rounds) for k in rounds[0]}
    # The 101-alpha sweep's endpoints are the 2-alpha sweep's, exactly.
    full, ends = ensemble(grids[101], 15), ensemble(grids[2], 15)
    assert torch.equal(full[:, [0, 100]], ends)
    print(f"2 sets x {args.images} images (64x64, bench ViT), {CLASSES}-class head (+ a 200-class subset set), "
          f"threads={args.threads}, best of {args.repeat}")
    for bins, what in ((15, "with calibration (15 ECE bins)"), (0, "top-1 only")):
        print(f"{what:32s} 2 alphas {t[2, bins]:6.2f} s   101 alphas {t[101, bins]:6.2f} s   "
              f"ratio {t[101, bins] / t[2, bins]:.3f}")
    print(f"(f) output-ensemble sweep 101 / 2 alphas = {t[101, 15] / t[2, 15]:.3f} (goal <= 1.1; top-1 only: "
          f"{t[101, 0] / t[2, 0]:.3f})")


if __name__ == "__main__":
    main()
