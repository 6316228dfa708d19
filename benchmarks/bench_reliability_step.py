"""Per-step cost of the reliability callbacks (per-step reseeding, the non-finite loss/gradient guard).

Runs the project's ``WiSEFTModule`` on the benchmark ViT for the same steps twice, with and without
:class:`~wiseft.runtime.exact_resume.StepSeed` and :class:`~wiseft.runtime.guards.FiniteLossGuard`, and prints the
ratio of median step times (1.0 = free). Step checkpoints are left out: their cost is the checkpoint size over the
disk's bandwidth, every ``every_n_train_steps`` steps.

Usage: ``python -m benchmarks.bench_reliability_step [--steps 60] [--batch-size 32] [--threads 1] [--repeat 2]``.
"""

from __future__ import annotations

import copy
import tempfile
from statistics import median

import lightning as L
import torch
from torch.utils.data import DataLoader

from benchmarks.lightning_step_bench import StepClock, intervals, step_bench_setup
from wiseft.config.schema import FinetuneConfig
from wiseft.models.module import WiSEFTModule
from wiseft.runtime.exact_resume import StepSeed
from wiseft.runtime.guards import FiniteLossGuard


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
    args, classifier, loader, recipe = step_bench_setup(__doc__.splitlines()[0])
    rounds = [(step_time(classifier, loader, recipe, args.steps, True),
               step_time(classifier, loader, recipe, args.steps, False)) for _ in range(args.repeat)]
    with_, without = min(r[0] for r in rounds), min(r[1] for r in rounds)
    print(f"step with StepSeed + FiniteLossGuard: {with_ * 1e3:.1f} ms   without: {without * 1e3:.1f} ms   "
          f"ratio {with_ / without:.3f} (batch {args.batch_size}, threads={args.threads}, best of {args.repeat})")


if __name__ == "__main__":
    main()
