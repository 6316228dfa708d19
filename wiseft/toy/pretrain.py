"""Contrastive pretraining of the toy CLIP on the toy world's captioned web corpus.

Usage::

    python -m wiseft.toy.pretrain                        # rebuilds wiseft/assets/toy_clip.safetensors
    python -m wiseft.toy.pretrain --steps 300 --out /tmp/toy.safetensors

The loop is plain PyTorch with open_clip's ``ClipLoss``, the model is built by ``open_clip.create_model`` and the
weights are written as an open_clip state dict (fp16 safetensors, loadable with
``open_clip.create_model("toy-clip", pretrained=path)``). Given the seed and thread count it is deterministic on CPU.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

from wiseft.io.atomic import atomic_write
from wiseft.toy.model import (
    MODEL_NAME,
    WEIGHTS_PATH,
    eval_sets,
    normalisation,
    register_toy_config,
    to_input,
    toy_tokenizer,
    zero_shot_accuracies,
)
from wiseft.toy.world import DOMAINS, default_root, ensure_world

log = logging.getLogger("wiseft.toy.pretrain")  # not __name__: "__main__" under python -m


@dataclass
class PretrainConfig:
    """Pretraining hyperparameters.

    Attributes:
        steps: Optimiser steps.
        batch_size: Image-caption pairs per step.
        lr: Peak AdamW learning rate.
        weight_decay: AdamW weight decay (not applied to gains, biases, embeddings and the logit scale).
        warmup: Linear warmup steps before the cosine decay.
        seed: Seed of initialisation and data order.
        world_seed: Seed of the toy world whose web corpus is used.
        world_scale: Scale of that world (1.0 for the shipped weights; smaller for quick checks).
        threads: ``torch.set_num_threads`` value (``None`` leaves it alone). Results are bitwise reproducible for
            a fixed seed and thread count, so the shipped weights fix it: two, which took 2,180 s for the 20,000
            steps on an otherwise idle 2-core machine. On a machine that is also running other jobs, two intra-op
            threads were measured ~18x slower than one (0.2 s vs 3.9 s per step); pass 1 there (other weights).
        model: open_clip model name (a variant registered with ``open_clip.add_model_config`` for experiments).
    """

    steps: int = 20000
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 0.1
    warmup: int = 150
    seed: int = 0
    world_seed: int = 0
    world_scale: float = 1.0
    threads: int | None = 2
    model: str = MODEL_NAME


def load_web(world: Path) -> tuple[torch.Tensor, list[str]]:
    """Read the web corpus: ``uint8`` images ``(N, 32, 32, 3)`` and their captions."""
    images, captions = [], []
    with open(world / "web" / "captions.jsonl", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            images.append(np.asarray(Image.open(world / "web" / row["file"]).convert("RGB")))
            captions.append(row["caption"])
    return torch.from_numpy(np.stack(images)), captions


def augment(x: torch.Tensor, gen: torch.Generator, shift: int = 2) -> torch.Tensor:
    """Random dihedral transform and translation (replicate padding) per image of an NCHW batch.

    Class and caption are invariant to both: shapes are drawn at random rotations and captions never mention
    orientation or position.
    """
    b, _, h, w = x.shape
    flips = torch.rand(b, 3, generator=gen) < 0.5
    x = torch.where(flips[:, 0, None, None, None], x.flip(3), x)
    x = torch.where(flips[:, 1, None, None, None], x.flip(2), x)
    x = torch.where(flips[:, 2, None, None, None], x.transpose(2, 3), x)
    padded = F.pad(x, (shift, shift, shift, shift), mode="replicate")
    dy, dx = torch.randint(0, 2 * shift + 1, (2, b), generator=gen)
    rows = (torch.arange(h)[None, :] + dy[:, None])[:, :, None]
    cols = (torch.arange(w)[None, :] + dx[:, None])[:, None, :]
    return padded.permute(0, 2, 3, 1)[torch.arange(b)[:, None, None], rows, cols].permute(0, 3, 1, 2)


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    # As open_clip's training script: no decay on gains, biases, norms, embeddings and the logit scale.
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        skip = p.ndim < 2 or "bias" in name or "norm" in name or "embedding" in name or "logit_scale" in name
        (no_decay if skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_at(step: int, cfg: PretrainConfig) -> float:
    """Linear warmup then cosine decay to zero."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return 0.5 * cfg.lr * (1 + math.cos(math.pi * progress))


def pretrain_metadata(cfg: PretrainConfig, world_id: str) -> dict[str, str]:
    """The safetensors metadata of a pretrained toy CLIP: its config and world, as one sorted JSON entry.

    One entry because safetensors writes its metadata map in a per-process random order: with several keys the
    same weights would give different bytes on every run. No timings either, so a rebuild equals the shipped file.
    """
    return {"pretrain": json.dumps(asdict(cfg) | {"world_id": world_id}, sort_keys=True)}


def save_weights(model: torch.nn.Module, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write the model's open_clip state dict as fp16 safetensors, atomically (temp file, then ``os.replace``).

    fp16 halves the file; ``open_clip.load_checkpoint`` copies it into the fp32 model (``copy_`` casts).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata=metadata))
    return path


def pretrain(
    out_path: str | Path = WEIGHTS_PATH,
    seed: int = 0,
    steps: int = PretrainConfig.steps,
    *,
    world_root: str | Path | None = None,
    config: PretrainConfig | None = None,
    evaluate: bool = True,
    log_every: int = 100,
    monitor_every: int = 0,
) -> dict[str, float]:
    """Contrastively pretrain the toy CLIP from scratch and save its weights.

    Args:
        out_path: Destination ``.safetensors``.
        seed: Seed of initialisation and data order (overrides ``config.seed``).
        steps: Optimiser steps (overrides ``config.steps``).
        world_root: Cache directory of toy worlds (default :func:`wiseft.toy.world.default_root`).
        config: Other hyperparameters.
        evaluate: Whether to measure zero-shot accuracy of the saved weights on every domain.
        log_every: Log the loss every this many steps.
        monitor_every: If positive, log zero-shot accuracy on small evaluation subsets every this many steps.

    Returns:
        Zero-shot top-1 accuracy (percent) per evaluation set of the saved (fp16) weights; empty if not evaluated.
    """
    cfg = PretrainConfig(**{**asdict(config or PretrainConfig()), "seed": seed, "steps": steps})
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    # The labelled domains are only needed to measure zero-shot accuracy.
    domains = DOMAINS if evaluate or monitor_every > 0 else ("web",)
    world = ensure_world(world_root or default_root(), seed=cfg.world_seed, scale=cfg.world_scale, domains=domains)
    images, captions = load_web(world)
    tokenizer = toy_tokenizer()
    tokens = tokenizer(captions)

    torch.manual_seed(cfg.seed)
    register_toy_config()
    model = open_clip.create_model(cfg.model)
    mean, std = normalisation(model)
    model.train()
    optimizer = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)
    loss_fn = open_clip.ClipLoss()
    gen = torch.Generator().manual_seed(cfg.seed)
    order = torch.randperm(len(images), generator=gen)
    monitor = eval_sets(world, limit_per_class=30) if monitor_every > 0 else None
    cursor, start, running = 0, time.perf_counter(), 0.0
    for step in range(cfg.steps):
        if cursor + cfg.batch_size > len(order):
            order, cursor = torch.randperm(len(images), generator=gen), 0
        idx = order[cursor : cursor + cfg.batch_size]
        cursor += cfg.batch_size
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        x = augment(to_input(images[idx], mean, std), gen)
        # Captions repeat a lot within a batch: encode each distinct one once (same loss, less text-tower work).
        unique, inverse = torch.unique(tokens[idx], dim=0, return_inverse=True)
        image_features = model.encode_image(x, normalize=True)
        text_features = model.encode_text(unique, normalize=True)[inverse]
        loss = loss_fn(image_features, text_features, model.logit_scale.exp())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        running += loss.item()
        if log_every and (step + 1) % log_every == 0:
            log.info(
                "step %d/%d loss %.3f scale %.1f (%.0fs)",
                step + 1,
                cfg.steps,
                running / log_every,
                model.logit_scale.exp().item(),
                time.perf_counter() - start,
            )
            running = 0.0
        if monitor is not None and (step + 1) % monitor_every == 0:
            accs = zero_shot_accuracies(model, monitor, tokenizer)
            log.info("step %d zero-shot: %s", step + 1, " ".join(f"{k}={v:.1f}" for k, v in accs.items()))
            model.train()
    elapsed = time.perf_counter() - start
    log.info("pretraining took %.1fs", elapsed)
    save_weights(model, out_path, pretrain_metadata(cfg, world.name))
    if not evaluate:
        return {}
    register_toy_config()
    saved = open_clip.create_model(cfg.model, pretrained=str(out_path)).eval()
    accs = zero_shot_accuracies(saved, eval_sets(world), tokenizer)
    for name, acc in accs.items():
        log.info("zero-shot %-15s %5.1f%%", name, acc)
    return accs


def main(argv: list[str] | None = None) -> None:
    """CLI entry point (``python -m wiseft.toy.pretrain``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = PretrainConfig()
    parser.add_argument("--out", default=str(WEIGHTS_PATH), help="output .safetensors (default: the shipped file)")
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--warmup", type=int, default=defaults.warmup)
    parser.add_argument("--world-seed", type=int, default=defaults.world_seed)
    parser.add_argument("--world-scale", type=float, default=defaults.world_scale)
    parser.add_argument(
        "--world-root", default=None, help="toy world cache (default: $WISEFT_DATA_DIR/toy or ~/.cache/wiseft/data/toy)"
    )
    parser.add_argument("--threads", type=int, default=defaults.threads)
    parser.add_argument("--model", default=defaults.model, help="open_clip model name (default: %(default)s)")
    parser.add_argument("--model-config", default=None, help="extra open_clip model-config JSON to register")
    parser.add_argument("--no-eval", action="store_true", help="skip the zero-shot evaluation at the end")
    parser.add_argument("--monitor-every", type=int, default=0, help="log zero-shot accuracy every N steps")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    logging.getLogger("wiseft").setLevel(logging.INFO)
    if args.model_config:
        open_clip.add_model_config(args.model_config)
    cfg = PretrainConfig(
        batch_size=args.batch_size,
        lr=args.lr,
        warmup=args.warmup,
        world_seed=args.world_seed,
        world_scale=args.world_scale,
        threads=args.threads,
        model=args.model,
    )
    pretrain(
        args.out,
        args.seed,
        args.steps,
        world_root=args.world_root,
        config=cfg,
        evaluate=not args.no_eval,
        monitor_every=args.monitor_every,
    )


if __name__ == "__main__":
    main()
