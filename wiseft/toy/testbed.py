"""A testbed of standard models for the toy world: the effective-robustness baseline of the built-in benchmark.

Taori et al. (2020) found that models trained on the reference distribution alone lie close to a line once reference
and shift top-1 are logit-transformed; a model's effective robustness is its height above that line. This module
builds the toy world's own testbed: library image classifiers (timm's tiny ``test_*`` models and small
timm/torchvision networks) trained from scratch on ``reference/train`` only (never on the web corpus the toy CLIP saw),
varied in architecture, size, epochs, training-set fraction and augmentation, each evaluated on ``reference/test``
and every shift. The lines are fitted with :func:`wiseft.review.robustness.fit_table`, as for any table of standard
models::

    python -m wiseft.toy.testbed --out outputs/toy_testbed           # testbed.csv, fits.json
    python -m wiseft.toy.testbed --out outputs/toy_testbed --ship    # also the package's `toy` table

The per-model results are cached under ``<out>/models/``, so an interrupted run continues where it stopped. The
table is deterministic on CPU for a given ``--seed`` and ``--threads`` (and library versions, which the fits record).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import platform
import shutil
import sys
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
import torchvision
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from wiseft.errors import ConfigError, TrainingError, WiseftError
from wiseft.io.atomic import atomic_write_text
from wiseft.review.plots import save_figure
from wiseft.review.results import read_rows
from wiseft.review.robustness import (
    AVG_SHIFTS,
    SHIPPED_TABLES,
    BaselineTable,
    LinearFit,
    fit_table,
    logit,
    read_model_table,
)
from wiseft.toy.domains import SHIFT_DOMAINS
from wiseft.toy.model import load_image_folder
from wiseft.toy.vocab import CLASSNAMES
from wiseft.toy.world import LABELLED_DOMAINS, default_root, ensure_world, split_counts, world_id

log = logging.getLogger("wiseft.toy.testbed")  # not __name__: "__main__" under python -m

#: The reference column: ``data.reference.name`` of ``conf/data/toy.yaml``, so the fits apply to the default job.
REFERENCE = "photo"
#: Name of the shipped table (``robustness.fits: toy``).
TABLE_NAME = "toy"
#: The testbed's model table, shipped next to the fits so anyone can refit it
#: (``python -m wiseft.review.robustness fit``).
SHIPPED_MODELS = SHIPPED_TABLES.parent / "toy_testbed.csv"

BATCH_SIZE = 128
WEIGHT_DECAY = 0.05
EVAL_BATCH = 1000
_PAD = 4  # pixels of reflect padding before the random 32x32 crop
_TRIVIAL_GROUP = 16  # images per TrivialAugmentWide draw


def _timm(name: str, **kwargs: Any) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        return timm.create_model(name, pretrained=False, num_classes=len(CLASSNAMES), **kwargs)

    return build


def _torchvision(name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        return torchvision.models.get_model(name, weights=None, num_classes=len(CLASSNAMES))

    return build


#: Architectures by name, all from libraries and all randomly initialised. The ViTs get 8x8-pixel patches on the
#: 32x32 images (16 tokens); the CNNs take 32x32 input as they are.
ARCHITECTURES: dict[str, Callable[[], nn.Module]] = {
    "test_byobnet": _timm("test_byobnet"),
    "test_efficientnet": _timm("test_efficientnet"),
    "test_efficientnet_gn": _timm("test_efficientnet_gn"),
    "test_resnet": _timm("test_resnet"),
    "test_convnext": _timm("test_convnext"),
    "test_convnext2": _timm("test_convnext2"),
    "test_mambaout": _timm("test_mambaout"),
    "test_coatnet": _timm("test_coatnet", img_size=32),
    "test_vit": _timm("test_vit", img_size=32, patch_size=8),
    "test_vit2": _timm("test_vit2", img_size=32, patch_size=8),
    "lcnet_050": _timm("lcnet_050"),
    "resnet10t": _timm("resnet10t"),
    "shufflenet_v2_x0_5": _torchvision("shufflenet_v2_x0_5"),
    "squeezenet1_1": _torchvision("squeezenet1_1"),
}


def _crop_flip(batch: torch.Tensor) -> torch.Tensor:
    # The CIFAR-style standard: reflect-pad by 4, crop 32x32 at a random offset, flip half the images. Done on the
    # whole batch (one pad, one gather) because torchvision's per-image transforms cost more than a step here.
    n, _, h, w = batch.shape
    padded = TF.pad(batch, [_PAD], padding_mode="reflect")
    offsets = torch.randint(0, 2 * _PAD + 1, (n, 2))
    rows = (offsets[:, 0:1] + torch.arange(h)).view(n, 1, h, 1)
    cols = (offsets[:, 1:2] + torch.arange(w)).view(n, 1, 1, w)
    out = padded[torch.arange(n).view(n, 1, 1, 1), torch.arange(batch.shape[1]).view(1, -1, 1, 1), rows, cols]
    return torch.where((torch.rand(n) < 0.5).view(n, 1, 1, 1), out.flip(-1), out)


def _trivial(batch: torch.Tensor) -> torch.Tensor:
    # torchvision's TrivialAugmentWide draws one op and strength per call; calling it per group of a few images
    # keeps its CPU cost below the training step's while batches still mix many ops.
    augment = v2.TrivialAugmentWide()
    batch = _crop_flip(batch)
    return torch.cat([augment(group) for group in batch.split(_TRIVIAL_GROUP)])


#: Training augmentations of a ``uint8`` NCHW batch: none, the CIFAR-style standard (reflect-padded random crop and
#: horizontal flip), and that plus torchvision's TrivialAugmentWide (one op per group of 16 images).
AUGMENTATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "none": lambda batch: batch,
    "crop_flip": _crop_flip,
    "trivial": _trivial,
}


@dataclass(frozen=True)
class StandardModel:
    """One member of the testbed: an architecture and how it is trained.

    Attributes:
        arch: Key of :data:`ARCHITECTURES`.
        epochs: Passes over its training subset.
        fraction: Share of ``reference/train`` it trains on (class-balanced; smaller subsets are nested in larger).
        augment: Key of :data:`AUGMENTATIONS`.
        lr: Peak AdamW learning rate (linear warmup over the first tenth of the steps, then cosine to zero).
    """

    arch: str
    epochs: int
    fraction: float = 1.0
    augment: str = "crop_flip"
    lr: float = 2e-3

    @property
    def name(self) -> str:
        """Unique row name, e.g. ``test_resnet-e12-f0.5-crop_flip``."""
        lr = "" if self.lr == StandardModel.lr else f"-lr{self.lr:g}"
        return f"{self.arch}-e{self.epochs}-f{self.fraction:g}-{self.augment}{lr}"

    def check(self) -> None:
        """Raise :class:`ConfigError` naming the first invalid field."""
        if self.arch not in ARCHITECTURES:
            raise ConfigError(f"unknown architecture '{self.arch}' (known: {', '.join(ARCHITECTURES)})")
        if self.augment not in AUGMENTATIONS:
            raise ConfigError(f"{self.name}: unknown augmentation '{self.augment}' (known: {', '.join(AUGMENTATIONS)})")
        if self.epochs < 1:
            raise ConfigError(f"{self.name}: epochs must be at least 1, got {self.epochs}")
        if not 0.0 < self.fraction <= 1.0:
            raise ConfigError(f"{self.name}: fraction must lie in (0, 1], got {self.fraction}")
        if not self.lr > 0.0:
            raise ConfigError(f"{self.name}: lr must be positive, got {self.lr}")


#: The testbed whose fits ship as the ``toy`` table: 29 models of 14 architectures from 0.1M to 4.9M parameters,
#: trained for 5 to 1,880 steps. Short runs and small subsets fill the low end of the accuracy range (see README).
DEFAULT_TESTBED: tuple[StandardModel, ...] = (
    StandardModel("test_byobnet", 1, 0.1, "none"),
    StandardModel("test_byobnet", 1, 0.25),
    StandardModel("test_byobnet", 1, 1.0, "none", lr=3e-4),
    StandardModel("test_byobnet", 10, 0.2),
    StandardModel("test_byobnet", 10, 1.0, "none"),
    StandardModel("test_byobnet", 10, 1.0, "trivial"),
    StandardModel("test_efficientnet", 1, 0.5, "none"),
    StandardModel("test_efficientnet", 2, 0.25),
    StandardModel("test_efficientnet", 10),
    StandardModel("test_efficientnet_gn", 5, 0.5, "none"),
    StandardModel("test_resnet", 1, 0.25, "none"),
    StandardModel("test_resnet", 1, 1.0, lr=1e-4),
    StandardModel("test_resnet", 10),
    StandardModel("test_resnet", 40, 1.0, "trivial"),
    StandardModel("test_convnext", 1, 0.5, "none"),
    StandardModel("test_convnext", 10),
    StandardModel("test_convnext2", 5, 1.0, "trivial"),
    StandardModel("test_mambaout", 3, 0.5),
    StandardModel("test_coatnet", 5),
    StandardModel("test_vit", 1, 0.5),
    StandardModel("test_vit", 2, 0.1, "none"),
    StandardModel("test_vit", 10),
    StandardModel("test_vit2", 5, 0.5, "none"),
    StandardModel("squeezenet1_1", 5),
    StandardModel("squeezenet1_1", 15, 1.0, lr=1e-3),
    StandardModel("shufflenet_v2_x0_5", 3, 1.0, "none"),
    StandardModel("shufflenet_v2_x0_5", 10, 1.0, "trivial"),
    StandardModel("lcnet_050", 10),
    StandardModel("resnet10t", 8),
)

#: A three-model testbed that runs in seconds on a small world (``--preset smoke``; the tests use it).
SMOKE_TESTBED: tuple[StandardModel, ...] = (
    StandardModel("test_byobnet", 1, augment="none"),
    StandardModel("test_efficientnet", 2, fraction=0.5),
    StandardModel("test_vit", 1, augment="trivial"),
)

PRESETS: dict[str, tuple[StandardModel, ...]] = {"default": DEFAULT_TESTBED, "smoke": SMOKE_TESTBED}


@dataclass
class WorldData:
    """The world's labelled images in memory: ``uint8`` NCHW images and ``int64`` labels per set."""

    train: tuple[torch.Tensor, torch.Tensor]
    evaluation: dict[str, tuple[torch.Tensor, torch.Tensor]]  # REFERENCE (reference/test), then the shifts


def load_world(world: Path) -> WorldData:
    """Read ``reference/train``, ``reference/test`` and every shift domain of a generated world."""

    def read(folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = load_image_folder(folder)
        return images.permute(0, 3, 1, 2).contiguous(), labels

    evaluation = {REFERENCE: read(world / "reference" / "test")}
    evaluation.update({d: read(world / d) for d in SHIFT_DOMAINS})
    return WorldData(read(world / "reference" / "train"), evaluation)


def model_seed(seed: int, spec: StandardModel) -> int:
    """The seed of one model's initialisation, data order and augmentation: independent of the testbed's order."""
    return zlib.crc32(f"{seed}/{spec.name}".encode())


def training_subset(labels: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """Indices of a class-balanced ``fraction`` of the training set (at least one image per class).

    One seeded permutation serves every fraction, so a smaller subset is contained in a larger one.
    """
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    keep = []
    for c in range(len(CLASSNAMES)):
        members = order[labels[order] == c]
        keep.append(members[: max(1, round(fraction * len(members)))])
    return torch.cat(keep).sort().values


def _normalise(images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std


def _warmup_cosine(total: int) -> Callable[[int], float]:
    warmup = max(1, total // 10)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    return factor


def train_model(spec: StandardModel, images: torch.Tensor, labels: torch.Tensor, seed: int) -> nn.Module:
    """Train ``spec`` from scratch on ``images`` (``uint8`` NCHW) with AdamW and cross-entropy.

    Everything random (initialisation, data order, augmentation) draws from torch's generator seeded with ``seed``,
    so the result depends only on it, the data and the thread count.
    """
    torch.manual_seed(seed)
    model = ARCHITECTURES[spec.arch]()
    augment = AUGMENTATIONS[spec.augment]
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=WEIGHT_DECAY)
    steps_per_epoch = math.ceil(len(labels) / BATCH_SIZE)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_cosine(spec.epochs * steps_per_epoch))
    model.train()
    for _ in range(spec.epochs):
        order = torch.randperm(len(labels))
        for start in range(0, len(labels), BATCH_SIZE):
            idx = order[start : start + BATCH_SIZE]
            loss = F.cross_entropy(model(_normalise(augment(images[idx]))), labels[idx])
            if not torch.isfinite(loss):
                raise TrainingError(f"{spec.name}: the loss became {loss.item()} (lower its lr)")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    return model.eval()


@torch.inference_mode()
def evaluate_model(model: nn.Module, sets: Mapping[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
    """Top-1 accuracy (percent) on each set."""
    model.eval()
    out = {}
    for name, (images, labels) in sets.items():
        correct = sum(
            (model(_normalise(images[i : i + EVAL_BATCH])).argmax(-1) == labels[i : i + EVAL_BATCH]).sum().item()
            for i in range(0, len(labels), EVAL_BATCH)
        )
        out[name] = 100.0 * correct / len(labels)
    return out


def _fmt(accuracy: float) -> str:
    # Accuracies are counts over sets of a few hundred or thousand images: two decimals are exact at every shipped
    # scale, and a fixed format keeps the table byte-identical between rebuilds.
    return f"{accuracy:.2f}"


def run_testbed(
    specs: Sequence[StandardModel],
    out: str | Path,
    seed: int = 0,
    world_root: str | Path | None = None,
    world_seed: int = 0,
    world_scale: float = 1.0,
) -> Path:
    """Train and evaluate every model of ``specs`` and write ``<out>/testbed.csv`` (one row per model).

    A model whose row is already cached in ``<out>/models/`` (same spec, seed, world and thread count) is not
    trained again.

    Returns:
        The path of the table.
    """
    if not specs:
        raise ConfigError("the testbed has no model")
    for spec in specs:
        spec.check()
    names = [s.name for s in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"the testbed lists model '{duplicates[0]}' more than once")
    world = ensure_world(world_root or default_root(), seed=world_seed, scale=world_scale, domains=LABELLED_DOMAINS)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out '{out}' exists and is not a folder")
    data = load_world(world)
    train_images, train_labels = data.train
    rows = []
    start_all = time.perf_counter()
    for i, spec in enumerate(specs, 1):
        key = {"spec": asdict(spec), "seed": seed, "world": world.name, "threads": torch.get_num_threads()}
        cached = out / "models" / f"{spec.name}.json"
        if cached.is_file() and (record := json.loads(cached.read_text())).get("key") == key:
            rows.append(record["row"])
            log.info("[%d/%d] %s: cached", i, len(specs), spec.name)
            continue
        start = time.perf_counter()
        subset = training_subset(train_labels, spec.fraction, seed)
        model = train_model(spec, train_images[subset], train_labels[subset], model_seed(seed, spec))
        accs = evaluate_model(model, data.evaluation)
        row = {"model": spec.name, "arch": spec.arch, "params": sum(p.numel() for p in model.parameters()),
               "epochs": spec.epochs, "fraction": f"{spec.fraction:g}", "augment": spec.augment, "lr": f"{spec.lr:g}",
               "train_images": len(subset), **{k: _fmt(v) for k, v in accs.items()},
               AVG_SHIFTS: _fmt(sum(accs[d] for d in SHIFT_DOMAINS) / len(SHIFT_DOMAINS))}
        seconds = time.perf_counter() - start
        atomic_write_text(cached, json.dumps({"key": key, "row": row, "seconds": round(seconds, 1)}, indent=1) + "\n")
        rows.append(row)
        log.info("[%d/%d] %s: %s %s, avg shifts %s (%.0fs)", i, len(specs), spec.name, REFERENCE, row[REFERENCE],
                 row[AVG_SHIFTS], seconds)
    log.info("testbed of %d models done in %.0fs", len(specs), time.perf_counter() - start_all)
    table = out / "testbed.csv"
    _write_csv(rows, table)
    return table


def _write_csv(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def fit_quality(reference: Sequence[float], shift: Sequence[float], w: float, b: float) -> dict[str, float]:
    """How well ``logit(shift) = w * logit(reference) + b`` describes the models.

    Returns:
        ``r2`` (in logit space), ``resid_sd`` (standard deviation of the logit residuals, n - 2 degrees of freedom),
        ``er_rms`` and ``er_max`` (root-mean-square and largest absolute effective robustness of the standard models
        themselves, in percentage points: how far a standard model may lie from the line).
    """
    xs = [logit(r / 100.0) for r in reference]
    ys = [logit(s / 100.0) for s in shift]
    resid = [y - (w * x + b) for x, y in zip(xs, ys, strict=True)]
    my = sum(ys) / len(ys)
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum(r * r for r in resid)
    er = [s - 100.0 / (1.0 + math.exp(-(w * x + b))) for x, s in zip(xs, shift, strict=True)]
    return {
        "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan"),
        "resid_sd": math.sqrt(ss_res / (len(xs) - 2)) if len(xs) > 2 else float("nan"),
        "er_rms": math.sqrt(sum(e * e for e in er) / len(er)),
        "er_max": max(abs(e) for e in er),
    }


def fit_testbed(
    table: str | Path,
    sizes: Mapping[str, int] | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Fit the logit-linear line of every shift and of their average from a testbed table.

    The fit is :func:`wiseft.review.robustness.fit_table` on the CSV as written, which is what
    ``python -m wiseft.review.robustness fit testbed.csv --reference photo --shifts v2,sketch,rendition,objectnet,hard``
    computes, with one exception: an accuracy of exactly 0 or 100 % (an infinite logit; shortcut learners can
    score 0 on ``hard``) is moved half an image inside, when ``sizes`` gives the set's size. Constants are
    rounded to four decimals, as the published ImageNet ones are.

    Args:
        table: The testbed's CSV (:func:`run_testbed`).
        sizes: Images per evaluation column (``photo`` and each shift), for the 0/100 % correction.
        provenance: Recorded in the result (the command, seed, versions...).

    Returns:
        The table as stored in ``effective_robustness.json``: ``reference``, ``source``, ``fits`` (``w``, ``b``,
        ``over`` for the average, and the quality of each fit, see :func:`fit_quality`) and ``provenance``.
    """
    models = read_model_table(table)
    columns = [REFERENCE, *SHIFT_DOMAINS]
    corrected = []
    for m in models:
        for col in columns:
            n = (sizes or {}).get(col)
            if n and float(m[col]) in (0.0, 100.0):
                m[col] = min(max(float(m[col]), 50.0 / n), 100.0 - 50.0 / n)
                corrected.append(f"{m['model']}:{col}")
    fitted: BaselineTable = fit_table(models, REFERENCE, list(SHIFT_DOMAINS))
    ref = [float(m[REFERENCE]) for m in models]
    fits: dict[str, Any] = {}
    for column, fit in fitted.fits.items():
        if column == AVG_SHIFTS:
            shift = [sum(float(m[d]) for d in SHIFT_DOMAINS) / len(SHIFT_DOMAINS) for m in models]
        else:
            shift = [float(m[column]) for m in models]
        w, b = round(fit.w, 4), round(fit.b, 4)
        quality = fit_quality(ref, shift, w, b)
        fits[column] = {"w": w, "b": b, **{k: round(v, 4 if k == "r2" else 3) for k, v in quality.items()},
                        **({"over": list(fit.over)} if fit.over else {})}
    prov = dict(provenance or {})
    prov.update({
        "models": len(models),
        f"{REFERENCE}_range": [min(ref), max(ref)],
        "avg_shifts_range": [round(min(float(m[AVG_SHIFTS]) for m in models), 2),
                             round(max(float(m[AVG_SHIFTS]) for m in models), 2)],
        "set_sizes": dict(sizes or {}),
        "zero_or_full_corrected": corrected,
    })
    source = (f"Toy-world testbed (python -m wiseft.toy.testbed): {len(models)} standard models trained from scratch "
              f"on the toy reference train split only, evaluated on reference/test ('{REFERENCE}') and the five "
              "shifts; linear fits in logit space as in Taori et al. 2020. Per-model table: "
              f"wiseft/data/metadata/{SHIPPED_MODELS.name}. Per fit: r2 and resid_sd (logit units) of the fit, er_rms "
              "and er_max (percentage points): how far the standard models themselves lie from the line.")
    return {"reference": REFERENCE, "source": source, "fits": fits, "provenance": prov}


_FLOOR = 0.3  # percent: where a 0 % accuracy (infinite logit) is drawn
_TICKS = (0.5, 1, 2, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 98, 99)


def plot_testbed(table: str | Path, entry: Mapping[str, Any], run: str | Path | None = None) -> Figure:
    """The robustness-vs-accuracy picture of the testbed: one logit-axes panel per shift and for their average.

    Each panel shows the standard models (grey dots) and their fitted line (dashed); with ``run``, a training run's
    folder (its ``results.jsonl``), also its WiSE-FT curve from the zero-shot (star) to the fine-tuned model
    (diamond): effective robustness is the height above the dashed line.
    """
    models = read_model_table(table)
    rows = read_rows(run) if run is not None else []
    columns = [*SHIFT_DOMAINS, AVG_SHIFTS]
    fig = Figure(figsize=(12.6, 8.4), dpi=100)
    for ax, col in zip(fig.subplots(2, 3).ravel(), columns, strict=True):
        fit = LinearFit(entry["fits"][col]["w"], entry["fits"][col]["b"])
        xs = [float(m[REFERENCE]) for m in models] + [r[REFERENCE] for r in rows]
        x0, x1 = max(min(xs) - 5.0, 0.5), min(max(xs) + 5.0, 99.5)
        grid = [x0 + (x1 - x0) * i / 100 for i in range(101)]
        line = [fit.baseline(x) for x in grid]
        ys = [float(m[col]) for m in models] + [r[col] for r in rows] + line
        y0, y1 = max(min(ys) * 0.8, 0.5 * _FLOOR), min(max(ys) + 5.0, 99.5)
        ax.set_xscale("logit")
        ax.set_yscale("logit")
        ax.plot([g / 100 for g in grid], [v / 100 for v in line], "--", color="0.3", lw=1.3,
                label=f"standard models' fit (R$^2$ {entry['fits'][col]['r2']:.2f})")
        ax.plot([g / 100 for g in grid], [g / 100 for g in grid], ":", color="0.6", lw=1, label="y = x")
        ax.scatter([max(float(m[REFERENCE]), _FLOOR) / 100 for m in models],
                   [max(float(m[col]), _FLOOR) / 100 for m in models], s=14, color="0.45", zorder=3,
                   label=f"standard models ({len(models)})")
        if rows:
            ax.plot([r[REFERENCE] / 100 for r in rows], [r[col] / 100 for r in rows], "-o", ms=3, color="tab:purple",
                    zorder=4, label="WiSE-FT, alpha 0 to 1")
            for row, marker, size in ((rows[0], "*", 150), (rows[-1], "D", 45)):
                ax.scatter([row[REFERENCE] / 100], [row[col] / 100], marker=marker, s=size, color="tab:purple",
                           zorder=5)
        ax.set_xlim(x0 / 100, x1 / 100)
        ax.set_ylim(y0 / 100, y1 / 100)
        for axis, lo, hi in ((ax.xaxis, x0, x1), (ax.yaxis, y0, y1)):
            axis.set_major_locator(FixedLocator([t / 100 for t in _TICKS if lo <= t <= hi]))
            axis.set_major_formatter(FuncFormatter(lambda v, _: f"{100 * v:g}"))
            axis.set_minor_locator(NullLocator())
        ax.set_title("average over the five shifts" if col == AVG_SHIFTS else col, fontsize=10)
        ax.set_xlabel(f"{REFERENCE} (reference) top-1 (%)", fontsize=8)
        ax.set_ylabel("top-1 (%)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.25)
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle("Toy world: robustness vs accuracy of standard models trained on the reference split (logit axes)",
                 fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return fig


def _format_tables(tables: Mapping[str, Mapping[str, Any]]) -> str:
    """The shipped JSON as the file has always been laid out: one fit per line (wrapped at 120 characters, continued
    under its first key), other mappings one entry per line."""

    def fit_lines(name: str, fit: Mapping[str, Any]) -> str:
        head = f"      {json.dumps(name)}: {{"
        pieces = [f"{json.dumps(k)}: {json.dumps(v)}" for k, v in fit.items()]
        lines, line = [], head + pieces[0]
        for piece in pieces[1:]:
            if len(line) + len(piece) + 3 > 120:  # ", " now and "}," or "," at the end
                lines.append(line + ",")
                line = " " * len(head) + piece
            else:
                line += ", " + piece
        return "\n".join([*lines, line + "}"])

    def field(key: str, value: Any) -> str:
        if key == "fits":
            return '    "fits": {\n' + ",\n".join(fit_lines(k, v) for k, v in value.items()) + "\n    }"
        if isinstance(value, Mapping):
            inner = ",\n".join(f"      {json.dumps(k)}: {json.dumps(v)}" for k, v in value.items())
            return f"    {json.dumps(key)}: {{\n{inner}\n    }}"
        return f"    {json.dumps(key)}: {json.dumps(value)}"

    parts = [f"  {json.dumps(name)}: {{\n" + ",\n".join(field(k, v) for k, v in table.items()) + "\n  }"
             for name, table in tables.items()]
    return "{\n" + ",\n".join(parts) + "\n}\n"


def ship(entry: Mapping[str, Any], table: Path, tables_path: Path = SHIPPED_TABLES,
         models_path: Path = SHIPPED_MODELS) -> None:
    """Store ``entry`` as the ``toy`` table of the package's baselines and copy the model table beside it."""
    tables = json.loads(tables_path.read_text())
    tables[TABLE_NAME] = dict(entry)
    atomic_write_text(tables_path, _format_tables(tables))
    shutil.copyfile(table, models_path)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m wiseft.toy.testbed``: build the testbed, fit the baselines, optionally ship them."""
    parser = argparse.ArgumentParser(prog="python -m wiseft.toy.testbed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="outputs/toy_testbed", help="folder for testbed.csv, fits.json and models/")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default",
                        help="default: the shipped testbed; smoke: three tiny models, to try the command")
    parser.add_argument("--models", default=None,
                        help="comma-separated model names: run only these rows of the preset (for debugging)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every model's training (default 0)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads; the table depends on it (default 1)")
    parser.add_argument("--world-root", default=None, help="toy world cache (default $WISEFT_DATA_DIR/toy)")
    parser.add_argument("--world-seed", type=int, default=0)
    parser.add_argument("--world-scale", type=float, default=1.0)
    parser.add_argument("--ship", action="store_true",
                        help=f"write the fits as the '{TABLE_NAME}' table of {SHIPPED_TABLES.name} (and the model "
                             f"table as {SHIPPED_MODELS.name}); only for the default preset on the default world")
    parser.add_argument("--run", default=None,
                        help="a training run's folder: draw its WiSE-FT curve on testbed.png with the standard models")
    parser.add_argument("--list", action="store_true", help="print the preset's model names and exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    logging.getLogger("wiseft").setLevel(logging.INFO)
    try:
        specs = list(PRESETS[args.preset])
        if args.list:
            print("\n".join(s.name for s in specs))
            return 0
        if args.models:
            wanted = [n.strip() for n in args.models.split(",") if n.strip()]
            unknown = [n for n in wanted if n not in {s.name for s in specs}]
            if unknown:
                raise ConfigError(f"--models: '{unknown[0]}' is not in the {args.preset} preset (see --list)")
            specs = [s for s in specs if s.name in wanted]
        if args.threads < 1:
            raise ConfigError(f"--threads must be at least 1, got {args.threads}")
        if not args.world_scale > 0:
            raise ConfigError(f"--world-scale must be positive, got {args.world_scale}")
        if args.ship and (args.preset != "default" or args.models or (args.world_seed, args.world_scale) != (0, 1.0)):
            raise ConfigError("--ship ships the full default testbed on the default world only "
                              "(drop --preset/--models/--world-seed/--world-scale)")
        if args.run is not None and not (Path(args.run) / "results.jsonl").is_file():
            raise ConfigError(f"--run: '{args.run}' has no results.jsonl (pass a finished training run's folder)")
        torch.set_num_threads(args.threads)
        table = run_testbed(specs, args.out, args.seed, args.world_root, args.world_seed, args.world_scale)
        # The arguments the table depends on, not the local --out/--world-root.
        world_args = "" if (args.world_seed, args.world_scale) == (0, 1.0) else \
            f" --world-seed {args.world_seed} --world-scale {args.world_scale:g}"
        subset = ("" if args.preset == "default" else f" --preset {args.preset}") + \
            (f" --models {args.models}" if args.models else "")
        command = f"python -m wiseft.toy.testbed{subset} --seed {args.seed} --threads {args.threads}{world_args}"
        provenance = {
            "command": command, "preset": args.preset, "seed": args.seed, "threads": args.threads,
            "world": world_id(args.world_seed, args.world_scale),
            "versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "torchvision": torchvision.__version__, "timm": timm.__version__},
        }
        counts = split_counts(args.world_scale)
        sizes = {REFERENCE: counts[("reference", "test")], **{d: counts[(d, None)] for d in SHIFT_DOMAINS}}
        entry = fit_testbed(table, sizes, provenance)
        atomic_write_text(Path(args.out) / "fits.json", json.dumps(entry, indent=2) + "\n")
        save_figure(plot_testbed(table, entry, args.run), Path(args.out) / "testbed.png")
        if args.ship:
            ship(entry, table)
    except WiseftError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(entry["fits"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
