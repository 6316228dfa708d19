"""(d) A Lightning fine-tuning step against a plain PyTorch step on the same model (goal <= 1.05).

Lightning side: the project's own :class:`~wiseft.models.module.WiSEFTModule` (cross-entropy, train loss and
accuracy logged every step, AdamW, per-step warmup+cosine schedule) in a ``Trainer`` with gradient clipping and a
CSV logger, as ``train.py`` runs it. Plain side: the same model, data, optimizer, schedule and clipping in a
hand-written loop. Step time = the median interval between consecutive steps (data loading included on both
sides), after warm-up.

Usage: ``python -m benchmarks.lightning_step_bench [--steps 60] [--batch-size 32] [--threads 1] [--repeat 2]``.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
import warnings
from statistics import median

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from benchmarks.common import register_bench_model, set_threads
from wiseft.config.schema import FinetuneConfig
from wiseft.models.factory import build_clip
from wiseft.models.module import WiSEFTModule, warmup_cosine
from wiseft.models.zeroshot import zero_shot_classifier

SKIP = 10  # warm-up steps left out of the median


class StepClock(L.Callback):
    """Records the time at the start of every training step."""

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.stamps.append(time.perf_counter())


def intervals(stamps: list[float]) -> list[float]:
    return [b - a for a, b in zip(stamps[SKIP:], stamps[SKIP + 1:], strict=False)]


def lightning_steps(classifier, loader, recipe: FinetuneConfig, steps: int) -> float:
    module = WiSEFTModule(copy.deepcopy(classifier), recipe)
    clock = StepClock()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = L.Trainer(max_steps=steps, accelerator="cpu", devices=1, precision="32-true",
                            gradient_clip_val=recipe.grad_clip, logger=L.pytorch.loggers.CSVLogger(tmp),
                            log_every_n_steps=10, callbacks=[clock], enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                            limit_val_batches=0, default_root_dir=tmp)
        trainer.fit(module, train_dataloaders=loader)
    return median(intervals(clock.stamps))


def plain_steps(classifier, loader, recipe: FinetuneConfig, steps: int) -> float:
    model = copy.deepcopy(classifier).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay, betas=recipe.betas)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, recipe.warmup_steps, steps))
    stamps: list[float] = []
    done = 0
    while done < steps:
        for images, labels in loader:
            stamps.append(time.perf_counter())
            loss = F.cross_entropy(model(images), labels, label_smoothing=recipe.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, recipe.grad_clip)
            optimizer.step()
            scheduler.step()
            done += 1
            if done == steps:
                break
    stamps.append(time.perf_counter())
    return median(intervals(stamps))


def step_bench_setup(description: str) -> tuple[argparse.Namespace, torch.nn.Module, DataLoader, FinetuneConfig]:
    """Command line, model, data and recipe shared by the per-step benchmarks.

    Returns:
        The parsed arguments (``steps``, ``batch_size``, ``threads``, ``repeat``), the zero-shot classifier on the
        benchmark ViT in train mode, a loader of random 64x64 images over 10 classes, and the fine-tuning recipe.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    set_threads(args.threads)
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    bundle = build_clip(register_bench_model())
    classes = [f"class{i}" for i in range(10)]
    classifier = zero_shot_classifier(bundle.model, bundle.tokenizer, classes, ["a photo of a {}."]).train()
    n = args.batch_size * 20
    data = TensorDataset(torch.randn(n, 3, 64, 64), torch.randint(0, 10, (n,)))
    loader = DataLoader(data, batch_size=args.batch_size, shuffle=True, drop_last=True)
    return args, classifier, loader, FinetuneConfig(lr=1e-4, warmup_steps=10, epochs=1, grad_clip=1.0)


def main() -> None:
    args, classifier, loader, recipe = step_bench_setup(__doc__.splitlines()[0])
    rounds = [(lightning_steps(classifier, loader, recipe, args.steps), plain_steps(classifier, loader, recipe,
                                                                                  args.steps))
              for _ in range(args.repeat)]
    t_lightning, t_plain = min(r[0] for r in rounds), min(r[1] for r in rounds)
    print(f"model: bench-vit image tower ({sum(p.numel() for p in classifier.parameters()) / 1e6:.1f}M params), "
          f"batch {args.batch_size} of 64x64 images, threads={args.threads}, median of {args.steps - SKIP - 1} "
          f"steps, best of {args.repeat} rounds")
    print(f"Lightning step: {t_lightning * 1e3:.1f} ms   plain PyTorch step: {t_plain * 1e3:.1f} ms")
    print(f"(d) Lightning / plain = {t_lightning / t_plain:.3f}   (goal <= 1.05)")


if __name__ == "__main__":
    main()
