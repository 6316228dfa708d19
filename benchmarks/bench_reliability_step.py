"""Per-step cost of the reliability callbacks (per-step reseeding, the non-finite loss/gradient guard).

Runs the project's ``WiSEFTModule`` on the benchmark ViT for the same steps twice, with and without
:class:`~wiseft.callbacks.resume.StepSeed` and :class:`~wiseft.callbacks.guards.FiniteLossGuard`, and prints the
ratio of median step times (1.0 = free). Step checkpoints are left out: their cost is the checkpoint size over the
disk's bandwidth, every ``every_n_train_steps`` steps.

Usage: ``python -m benchmarks.bench_reliability_step [--steps 60] [--batch-size 32] [--threads 1] [--repeat 2]``.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import warnings

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from benchmarks.common import median, register_bench_model, set_threads
from benchmarks.lightning_step_bench import StepClock, intervals
from wiseft.callbacks.guards import FiniteLossGuard
from wiseft.callbacks.resume import StepSeed
from wiseft.config import FinetuneConfig
from wiseft.models.factory import build_clip
from wiseft.models.module import WiSEFTModule
from wiseft.models.zeroshot import zero_shot_classifier


def step_time(classifier: torch.nn.Module, loader: DataLoader, recipe: FinetuneConfig, steps: int,
              reliability: bool) -> float:
    module = WiSEFTModule(copy.deepcopy(classifier), recipe)
    clock = StepClock()
    callbacks = [clock, StepSeed(0), FiniteLossGuard()] if reliability else [clock]
    with tempfile.TemporaryDirectory() as tmp:
        trainer = L.Trainer(max_steps=steps, accelerator="cpu", devices=1, precision="32-true",
                            gradient_clip_val=recipe.grad_clip, logger=False, callbacks=callbacks,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                            num_sanity_val_steps=0, limit_val_batches=0, default_root_dir=tmp)
        trainer.fit(module, train_dataloaders=loader)
    return median(intervals(clock.stamps))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    set_threads(args.threads)
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    bundle = build_clip(register_bench_model())
    classifier = zero_shot_classifier(bundle.model, bundle.tokenizer, [f"c{i}" for i in range(10)],
                                      ["a photo of a {}."]).train()
    n = args.batch_size * 20
    loader = DataLoader(TensorDataset(torch.randn(n, 3, 64, 64), torch.randint(0, 10, (n,))),
                        batch_size=args.batch_size, shuffle=True, drop_last=True)
    recipe = FinetuneConfig(lr=1e-4, warmup_steps=10, epochs=1, grad_clip=1.0)
    rounds = [(step_time(classifier, loader, recipe, args.steps, True),
               step_time(classifier, loader, recipe, args.steps, False)) for _ in range(args.repeat)]
    with_, without = min(r[0] for r in rounds), min(r[1] for r in rounds)
    print(f"step with StepSeed + FiniteLossGuard: {with_ * 1e3:.1f} ms   without: {without * 1e3:.1f} ms   "
          f"ratio {with_ / without:.3f} (batch {args.batch_size}, threads={args.threads}, best of {args.repeat})")


if __name__ == "__main__":
    main()
