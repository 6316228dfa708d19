"""(c) The linear-classifier sweep: 101 alphas against 2 alphas (goal <= 1.1).

The LC sweep (``finetune=linear``) reads cached features, evaluates the zero-shot and the fine-tuned heads once
each, and finds every alpha's top-1 from the two logit matrices (:mod:`wiseft.sweep.logits`). Timed here: the
whole sweep from features in memory to counts, for an ImageNet-sized head (1000 classes, 512-d features) on a
10k-image set plus a 200-class subset (an ImageNet-R-like projection). For contrast it also times the direct
method (every alpha's full logits, projected, argmax).

Usage: ``python -m benchmarks.lc_sweep_bench [--images 10000] [--threads 1] [--repeat 3]``.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from benchmarks.common import set_threads, timed
from wiseft.data.projection import ClassProjection, project_logits
from wiseft.sweep.logits import candidates, logit_sweep_counts


def problem(n: int, dim: int, classes: int, seed: int = 0):
    """Features and two heads where fine-tuning changes many predictions (as WiSE-FT's endpoints do)."""
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(classes, dim, generator=g), dim=-1)
    labels = torch.randint(0, classes, (n,), generator=g)
    features = F.normalize(centres[labels] + 4.0 * torch.randn(n, dim, generator=g) / dim**0.5, dim=-1)
    # Zero-shot head: noisy class directions at CLIP's temperature (~40% top-1); fine-tuned: less noisy (~70%).
    w0 = 100 * F.normalize(centres + 1.5 * torch.randn(classes, dim, generator=g) / dim**0.5, dim=-1)
    w1 = 100 * F.normalize(centres + 1.0 * torch.randn(classes, dim, generator=g) / dim**0.5, dim=-1)
    b1 = 0.5 * torch.randn(classes, generator=g)
    subset = ClassProjection.subset(sorted(torch.randperm(classes, generator=g)[:200].tolist()), classes)
    sub_rows = torch.isin(labels, torch.tensor([g[0] for g in subset.groups]))
    sub_labels = torch.tensor([dict((c[0], j) for j, c in enumerate(subset.groups))[int(x)]
                               for x in labels[sub_rows]])
    return features, (w0, torch.zeros(classes)), (w1, b1), labels, (features[sub_rows], sub_labels, subset)


def lc_sweep(features, head_0, head_1, labels, extra, grid) -> list[torch.Tensor]:
    """What the callback does per evaluation set: two head evaluations, then the logit sweep."""
    out = []
    for f, y, projection in ((features, labels, None), extra):
        l0, l1 = F.linear(f, *head_0), F.linear(f, *head_1)
        out.append(logit_sweep_counts(l0, l1, y, grid, projection))
    return out


def direct_sweep(features, head_0, head_1, labels, extra, grid) -> list[torch.Tensor]:
    """Every alpha's logits in full."""
    out = []
    for f, y, projection in ((features, labels, None), extra):
        l0, l1 = F.linear(f, *head_0), F.linear(f, *head_1)
        out.append(torch.tensor([int((project_logits(torch.lerp(l0, l1, a), projection).argmax(-1) == y).sum())
                                 for a in grid]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    set_threads(args.threads)
    features, head_0, head_1, labels, extra = problem(args.images, args.dim, args.classes)
    grids = {2: [0.0, 1.0], 101: [i / 100 for i in range(101)]}
    with torch.no_grad():
        for fn in (lc_sweep, direct_sweep):  # warm-up
            fn(features, head_0, head_1, labels, extra, grids[2])
        rounds = [{(fn.__name__, n): timed(lambda fn=fn, g=g: fn(features, head_0, head_1, labels, extra, g))
                   for fn in (lc_sweep, direct_sweep) for n, g in grids.items()} for _ in range(args.repeat)]
        t = {k: min(r[k] for r in rounds) for k in rounds[0]}
        counts = lc_sweep(features, head_0, head_1, labels, extra, grids[101])
        assert all(torch.equal(c[:, 0], d) for c, d in
                   zip(counts, direct_sweep(features, head_0, head_1, labels, extra, grids[101]), strict=True))
        rows, _ = candidates(F.linear(features, *head_0), F.linear(features, *head_1))
    acc = 100 * counts[0][:, 0].float() / len(labels)
    print(f"{args.images} images, {args.dim}-d features, {args.classes} classes (+ a 200-class subset set of "
          f"{len(extra[1])}), threads={args.threads}")
    print(f"reference accuracy: alpha=0 {acc[0]:.1f}%  alpha=0.5 {acc[50]:.1f}%  alpha=1 {acc[100]:.1f}%; "
          f"candidate classes per image: {len(rows) / args.images:.2f} of {args.classes}")
    print(f"LC sweep:     2 alphas {t['lc_sweep', 2] * 1e3:7.1f} ms   101 alphas {t['lc_sweep', 101] * 1e3:7.1f} ms")
    print(f"direct:       2 alphas {t['direct_sweep', 2] * 1e3:7.1f} ms   101 alphas "
          f"{t['direct_sweep', 101] * 1e3:7.1f} ms")
    print(f"(c) LC sweep 101 / 2 alphas = {t['lc_sweep', 101] / t['lc_sweep', 2]:.3f}   (goal <= 1.1); "
          f"direct method: {t['direct_sweep', 101] / t['direct_sweep', 2]:.1f}")


if __name__ == "__main__":
    main()
