"""Standalone WiSE-FT check of the toy world: zero-shot, end-to-end fine-tuning and weight interpolation.

Plain PyTorch, independent of the Lightning pipeline, used to calibrate the world and the shipped weights::

    python -m wiseft.toy.check --seeds 0 1 2

For each fine-tuning seed it fine-tunes the image tower plus a zero-shot-initialised linear head on
``reference/train`` (open_clip's own training transform), then evaluates ``theta = (1 - a) * zs + a * ft`` for
``a`` in 0, 0.1, ..., 1 on reference val/test and every shift domain.
"""

from __future__ import annotations

import argparse
import copy
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from PIL import Image

from wiseft.toy.domains import SHIFT_DOMAINS
from wiseft.toy.model import (
    MODEL_NAME,
    WEIGHTS_PATH,
    accuracy,
    create_toy_model,
    eval_sets,
    load_image_folder,
    normalisation,
    to_input,
    zero_shot_weights,
)
from wiseft.toy.world import LABELLED_DOMAINS, default_root, ensure_world

log = logging.getLogger("wiseft.toy.check")  # not __name__: "__main__" under python -m


@dataclass
class FinetuneConfig:
    """End-to-end fine-tuning hyperparameters (image tower and head, text tower unused).

    Attributes:
        lr: Peak AdamW learning rate.
        epochs: Passes over ``reference/train``.
        batch_size: Images per step.
        weight_decay: AdamW weight decay.
        warmup: Linear warmup steps before cosine decay.
        label_smoothing: Cross-entropy label smoothing.
        grad_clip: Gradient-norm clipping (``finetune.grad_clip`` of the job; 0 for none).
    """

    lr: float = 3e-3
    epochs: int = 6
    batch_size: int = 128
    weight_decay: float = 0.1
    warmup: int = 20
    label_smoothing: float = 0.0
    grad_clip: float = 1.0


class ZeroShotClassifier(torch.nn.Module):
    """Image tower plus a linear head on L2-normalised features (the WiSE-FT paper's classifier)."""

    def __init__(self, visual: torch.nn.Module, head_weight: torch.Tensor) -> None:
        super().__init__()
        self.visual = visual
        self.head = torch.nn.Linear(head_weight.shape[1], head_weight.shape[0])
        with torch.no_grad():
            self.head.weight.copy_(head_weight)
            self.head.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.normalize(self.visual(x), dim=-1))


def interpolate(zs: torch.nn.Module, ft: torch.nn.Module, alpha: float) -> torch.nn.Module:
    """``(1 - alpha) * zs + alpha * ft`` on every floating-point entry of the state dict."""
    out = copy.deepcopy(zs)
    sd_zs, sd_ft = zs.state_dict(), ft.state_dict()
    out.load_state_dict(
        {k: torch.lerp(v, sd_ft[k], alpha) if v.is_floating_point() else sd_ft[k] for k, v in sd_zs.items()}
    )
    return out


@torch.no_grad()
def logits_of(clf: torch.nn.Module, sets: dict, mean: torch.Tensor, std: torch.Tensor) -> dict[str, torch.Tensor]:
    """Logits of ``clf`` on every image of each set."""
    clf.eval()
    return {
        name: torch.cat([clf(to_input(x[i : i + 1000], mean, std)) for i in range(0, len(x), 1000)])
        for name, (x, _) in sets.items()
    }


@torch.no_grad()
def evaluate(clf: torch.nn.Module, sets: dict, mean: torch.Tensor, std: torch.Tensor) -> dict[str, float]:
    """Top-1 accuracy (percent) on each set."""
    logits = logits_of(clf, sets, mean, std)
    return {name: accuracy(logits[name], y) for name, (_, y) in sets.items()}


def relative_distance(zs: torch.nn.Module, ft: torch.nn.Module) -> float:
    """``||theta_ft - theta_zs|| / ||theta_zs||`` over the floating-point state (how far fine-tuning moved)."""
    sd_zs, sd_ft = zs.state_dict(), ft.state_dict()
    keys = [k for k, v in sd_zs.items() if v.is_floating_point()]
    diff = sum(float((sd_ft[k] - sd_zs[k]).pow(2).sum()) for k in keys)
    norm = sum(float(sd_zs[k].pow(2).sum()) for k in keys)
    return math.sqrt(diff / norm)


@torch.no_grad()
def diagnose(
    zs: torch.nn.Module, ft: torch.nn.Module, sets: dict, mean: torch.Tensor, std: torch.Tensor
) -> dict[str, dict[str, float]]:
    """Why interpolation does or does not beat the ends: the output-space ensemble and the logit margins.

    Returns:
        ``ens@w``: top-1 of ``(1 - w) * zero-shot logits + w * fine-tuned logits`` (the output-space counterpart of
        alpha ``w``: if no ``w`` beats the fine-tuned model on the reference, the two models have little
        complementary knowledge there and no interpolation can beat it); ``margin_zs`` / ``margin_ft``: mean top-1
        minus top-2 logit of each model (which one dominates an average).
    """
    lz, lf = logits_of(zs, sets, mean, std), logits_of(ft, sets, mean, std)
    margin = lambda t: float((t.topk(2, dim=-1).values @ torch.tensor([1.0, -1.0])).mean())  # noqa: E731
    weights = (0.3, 0.5, 0.7, 0.8, 0.9)
    out: dict[str, dict[str, float]] = {f"ens@{w}": {} for w in weights} | {"margin_zs": {}, "margin_ft": {}}
    for name, (_, y) in sets.items():
        for w in weights:
            out[f"ens@{w}"][name] = accuracy(torch.lerp(lz[name], lf[name], w), y)
        out["margin_zs"][name] = margin(lz[name])
        out["margin_ft"][name] = margin(lf[name])
    for key in out:
        out[key]["shift_avg"] = sum(out[key][d] for d in SHIFT_DOMAINS) / len(SHIFT_DOMAINS)
    return out


def finetune(
    clf: torch.nn.Module, images: list[Image.Image], labels: torch.Tensor, transform, cfg: FinetuneConfig, seed: int
) -> torch.nn.Module:
    """Fine-tune a copy of ``clf`` end to end (AdamW, warmup + cosine, cross-entropy)."""
    torch.manual_seed(seed)
    ft = copy.deepcopy(clf).train()
    optimizer = torch.optim.AdamW(ft.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = len(images) // cfg.batch_size
    total = cfg.epochs * steps_per_epoch
    gen = torch.Generator().manual_seed(seed)
    step = 0
    for _ in range(cfg.epochs):
        order = torch.randperm(len(images), generator=gen)
        for b in range(steps_per_epoch):
            idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            x = torch.stack([transform(images[i]) for i in idx])
            lr = (
                cfg.lr * min(1.0, (step + 1) / cfg.warmup)
                if step < cfg.warmup
                else (0.5 * cfg.lr * (1 + math.cos(math.pi * (step - cfg.warmup) / max(1, total - cfg.warmup))))
            )
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss = F.cross_entropy(ft(x), labels[idx], label_smoothing=cfg.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(ft.parameters(), cfg.grad_clip)
            optimizer.step()
            step += 1
    return ft.eval()


def run_check(
    weights: str | Path = WEIGHTS_PATH,
    seeds: tuple[int, ...] = (0, 1, 2),
    cfg: FinetuneConfig | None = None,
    world_root: str | Path | None = None,
    world_seed: int = 0,
    alphas: tuple[float, ...] = tuple(i / 10 for i in range(11)),
    diagnostics: bool = False,
    model_name: str = MODEL_NAME,
) -> dict[int, dict[float, dict[str, float]]]:
    """Zero-shot, fine-tune and interpolation sweep for several fine-tuning seeds.

    With ``diagnostics`` it also prints the relative distance fine-tuning moved, the output-space ensemble and the
    logit margins (:func:`diagnose`).

    Returns:
        ``{seed: {alpha: {set: accuracy}}}``; every set also gets ``shift_avg`` (mean over the shift domains).
    """
    cfg = cfg or FinetuneConfig()
    world = ensure_world(world_root or default_root(), seed=world_seed, domains=LABELLED_DOMAINS)
    model = create_toy_model(weights, model_name)
    mean, std = normalisation(model)
    _, train_transform, _ = open_clip.create_model_and_transforms(model_name)
    head = model.logit_scale.exp().item() * zero_shot_weights(model).T
    zs = ZeroShotClassifier(model.visual, head)
    sets = eval_sets(world)
    train_x, train_y = load_image_folder(world / "reference" / "train")
    train_images = [Image.fromarray(a.numpy()) for a in train_x]
    results: dict[int, dict[float, dict[str, float]]] = {}
    for seed in seeds:
        start = time.perf_counter()
        ft = finetune(zs, train_images, train_y, train_transform, cfg, seed)
        t_ft = time.perf_counter() - start
        results[seed] = {}
        for a in alphas:
            accs = evaluate(interpolate(zs, ft, a), sets, mean, std)
            accs["shift_avg"] = sum(accs[d] for d in SHIFT_DOMAINS) / len(SHIFT_DOMAINS)
            results[seed][a] = accs
        log.info("seed %d: fine-tune %.0fs, sweep %.0fs", seed, t_ft, time.perf_counter() - start - t_ft)
        print_table(results[seed], title=f"seed {seed}")
        if diagnostics:
            print(f" ||ft - zs|| / ||zs|| = {relative_distance(zs, ft):.4f}")
            print_table(diagnose(zs, ft, sets, mean, std), title="output-space ensemble and margins", key="")
    return results


def print_table(rows: dict, title: str = "", key: str = "alpha") -> None:
    """Print one interpolation sweep as a table (alpha rows, set columns), or any ``{row: {set: value}}``."""
    names = list(next(iter(rows.values())))
    print(f"\n{title}\n {key:>9s} " + " ".join(f"{n.replace('reference/', 'ref/'):>9s}" for n in names))
    for a, accs in rows.items():
        label = f"{a:9.2f}" if isinstance(a, float) else f"{a:>9s}"
        print(f" {label} " + " ".join(f"{accs[n]:9.1f}" for n in names))


def main(argv: list[str] | None = None) -> None:
    """CLI entry point (``python -m wiseft.toy.check``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    d = FinetuneConfig()
    parser.add_argument("--weights", default=str(WEIGHTS_PATH))
    parser.add_argument("--model", default=MODEL_NAME, help="open_clip model name of the weights (%(default)s)")
    parser.add_argument("--model-config", default=None, help="extra open_clip model-config JSON to register")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--lr", type=float, default=d.lr)
    parser.add_argument("--epochs", type=int, default=d.epochs)
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument("--weight-decay", type=float, default=d.weight_decay)
    parser.add_argument("--warmup", type=int, default=d.warmup)
    parser.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    parser.add_argument("--grad-clip", type=float, default=d.grad_clip)
    parser.add_argument("--world-root", default=None)
    parser.add_argument("--world-seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: see PretrainConfig.threads)")
    parser.add_argument("--alphas", type=float, nargs="+", default=[i / 10 for i in range(11)])
    parser.add_argument("--diagnostics", action="store_true", help="also print distance, ensemble and margins")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    logging.getLogger("wiseft").setLevel(logging.INFO)
    torch.set_num_threads(args.threads)
    if args.model_config:
        open_clip.add_model_config(args.model_config)
    cfg = FinetuneConfig(
        lr=args.lr,
        epochs=args.epochs,
        batch_size=args.batch_size,
        weight_decay=args.weight_decay,
        warmup=args.warmup,
        label_smoothing=args.label_smoothing,
        grad_clip=args.grad_clip,
    )
    results = run_check(
        args.weights,
        tuple(args.seeds),
        cfg,
        args.world_root,
        args.world_seed,
        alphas=tuple(args.alphas),
        diagnostics=args.diagnostics,
        model_name=args.model,
    )
    print("\nsummary (alpha=0 / 0.5 / 1):")
    for seed, rows in results.items():
        r0, r5, r1 = rows[0.0], rows[0.5], rows[1.0]
        print(
            f" seed {seed}: ref/test {r0['reference/test']:.1f} / {r5['reference/test']:.1f} / "
            f"{r1['reference/test']:.1f}   shift_avg {r0['shift_avg']:.1f} / {r5['shift_avg']:.1f} / "
            f"{r1['shift_avg']:.1f}"
        )


if __name__ == "__main__":
    main()
