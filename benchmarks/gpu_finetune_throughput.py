"""GPU: fine-tuning throughput (images/s) and model FLOP utilisation of a CLIP image tower, bf16 mixed precision.

End-to-end fine-tuning steps (forward, cross-entropy, backward, AdamW, gradient clipping) of a randomly
initialised open_clip image tower with a 1000-class head, on synthetic batches already on the GPU (the model's
throughput, not the data pipeline's). Run both through the project's LightningModule in a ``Trainer`` (the path
``train.py`` takes) and as a plain loop, so the Lightning overhead is visible at GPU speed too.

FLOPs per step are counted by ``torch.utils.flop_counter`` on one real step (matmuls, convolutions and attention,
forward and backward); MFU = counted FLOPs per second / the chip's dense bf16 peak.

Usage (on a GPU machine): ``python -m benchmarks.gpu_finetune_throughput [--model ViT-B-16] [--batch-size 256]
[--steps 30] [--grad-checkpointing] [--compile] [--peak-tflops 989]``. A CPU smoke run of the plumbing:
``python -m benchmarks.gpu_finetune_throughput --device cpu --model tiny-vit --batch-size 4 --steps 4
--precision 32-true --peak-tflops 1``.
"""

from __future__ import annotations

import argparse
import copy
import time
import warnings

import lightning as L
import open_clip
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from wiseft.config.schema import FinetuneConfig
from wiseft.models.classifier import ClassificationHead, ImageClassifier
from wiseft.models.factory import PACKAGE_MODEL_CONFIGS, register_model_configs
from wiseft.models.module import WiSEFTModule
from wiseft.models.performance import apply_performance_options

#: Dense bf16 tensor-core peaks (TFLOP/s) by device-name fragment, from the vendors' data sheets.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 70.0, "L4": 121.0}


class SyntheticBatches(torch.utils.data.IterableDataset):
    """The same device-resident batch, ``steps`` times."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, steps: int) -> None:
        self.images, self.labels, self.steps = images, labels, steps

    def __iter__(self):
        for _ in range(self.steps):
            yield self.images, self.labels


def build(model_name: str, num_classes: int, grad_checkpointing: bool, compile_model: bool) -> ImageClassifier:
    register_model_configs(PACKAGE_MODEL_CONFIGS)
    clip = open_clip.create_model(model_name)
    head = ClassificationHead(torch.randn(num_classes, clip.visual.output_dim) * 0.02)
    classifier = ImageClassifier(clip.visual, head)
    apply_performance_options(classifier.image_encoder, grad_checkpointing, compile_model)
    return classifier


def autocast(device: torch.device, precision: str):
    if precision == "bf16-mixed":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


def count_flops(model, images, labels, device, precision) -> int:
    probe = copy.deepcopy(model)
    with FlopCounterMode(display=False) as counter, autocast(device, precision):
        F.cross_entropy(probe(images), labels).backward()
    return counter.get_total_flops()


def plain(model, images, labels, steps, warmup, device, precision) -> float:
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.1, fused=device.type == "cuda")
    start = 0.0
    for step in range(warmup + steps):
        if step == warmup:
            sync(device)
            start = time.perf_counter()
        with autocast(device, precision):
            loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
    sync(device)
    return time.perf_counter() - start


class Clock(L.Callback):
    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.end = warmup, 0.0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.warmup:
            sync(pl_module.device)
            self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module) -> None:
        sync(pl_module.device)
        self.end = time.perf_counter()


def lightning(model, images, labels, steps, warmup, device, precision) -> float:
    module = WiSEFTModule(model, FinetuneConfig(lr=1e-5, warmup_steps=10, epochs=1))
    clock = Clock(warmup)
    loader = torch.utils.data.DataLoader(SyntheticBatches(images, labels, warmup + steps), batch_size=None)
    trainer = L.Trainer(accelerator=device.type, devices=1, precision=precision, max_steps=warmup + steps,
                        gradient_clip_val=1.0, logger=False, callbacks=[clock], enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        limit_val_batches=0)
    trainer.fit(module, train_dataloaders=loader)
    return clock.end - clock.start


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-16")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--precision", default="bf16-mixed", choices=["bf16-mixed", "32-true"])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--grad-checkpointing", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--peak-tflops", type=float, default=None, help="dense peak of the chip (default: by name)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = args.peak_tflops or next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    if peak is None:
        raise SystemExit(f"unknown peak for '{name}': pass --peak-tflops")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(0)
    model = build(args.model, 1000, args.grad_checkpointing, args.compile).to(device).train()
    size = model.image_encoder.image_size
    size = size if isinstance(size, tuple) else (size, size)
    images = torch.randn(args.batch_size, 3, *size, device=device)
    labels = torch.randint(0, 1000, (args.batch_size,), device=device)
    flops = count_flops(build(args.model, 1000, False, False).to(device).train(), images, labels, device,
                        args.precision)
    print(f"{args.model} on {name}: batch {args.batch_size} at {size[0]}px, {args.precision}, "
          f"grad_checkpointing={args.grad_checkpointing}, compile={args.compile}, "
          f"{flops / args.batch_size / 1e9:.1f} GFLOP per image (forward + backward)")
    for label, run in (("plain PyTorch", plain), ("Lightning (WiSEFTModule)", lightning)):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        seconds = run(copy.deepcopy(model), images, labels, args.steps, args.warmup, device, args.precision)
        per_s = args.batch_size * args.steps / seconds
        mfu = flops * args.steps / seconds / (peak * 1e12)
        memory = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
        print(f"{label:>24}: {per_s:8.1f} images/s   {seconds / args.steps * 1e3:7.1f} ms/step   "
              f"MFU {100 * mfu:5.1f}% of {peak:.0f} TFLOP/s   peak memory {memory:.1f} GiB")


if __name__ == "__main__":
    main()
