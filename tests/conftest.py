"""Shared fixtures: generated image trees, a tiny model, and composed configs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict
from PIL import Image

import wiseft.config.schema  # noqa: F401  (registers the schemas)

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
CLASSES = ("blue", "green", "red")
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}

# Tiny models: one thread avoids oversubscription overheads that dwarf the work itself.
torch.set_num_threads(1)


def make_tree(root: Path, classes: tuple[str, ...] = CLASSES, per_class: int = 4, seed: int = 0,
              size: int = 32) -> Path:
    """An ImageFolder tree whose class is the dominant colour of each (noisy) image."""
    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            base = np.array(COLOURS.get(c, (128, 128, 128)), dtype=np.float32)
            img = np.clip(base + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / c / f"{i}.png")
    return root


def make_image_data(data: Path, train_per_class: int = 8) -> Path:
    """``reference/{train,val,test}`` and two shift trees (3 images a class), one with a subset of the classes."""
    make_tree(data / "reference" / "train", per_class=train_per_class, seed=1)
    make_tree(data / "reference" / "val", per_class=3, seed=2)
    make_tree(data / "reference" / "test", per_class=3, seed=3)
    make_tree(data / "shift_full", per_class=3, seed=4)
    make_tree(data / "shift_sub", classes=("blue", "red"), per_class=3, seed=5)
    return data


@pytest.fixture
def image_root(tmp_path: Path) -> Path:
    """:func:`make_image_data` under ``tmp_path/data``."""
    return make_image_data(tmp_path / "data")


def compose_cfg(overrides: list[str] | None = None, output_dir: Path | str | None = None) -> DictConfig:
    """Compose ``conf/train.yaml`` as Hydra would (without running the app).

    Args:
        overrides: Command-line style overrides.
        output_dir: The run folder (``paths.output_dir``), which Hydra would set from ``hydra.run.dir``.
    """
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides or [], return_hydra_config=False)
    if output_dir is not None:
        with open_dict(cfg):
            cfg.paths.output_dir = str(output_dir)
    return cfg


def tiny_cfg(data_root: Path, out_dir: Path, extra: list[str] | None = None) -> DictConfig:
    """A seconds-long run: random tiny ViT on generated trees, 1 epoch, CSV logger, no progress bar."""
    overrides = [
        "model=tiny_random",
        "data=imagefolder",
        f"paths.data_dir={data_root}",
        "~experiment",
        "logger=csv",
        "callbacks=none",
        "finetune.epochs=1",
        "finetune.warmup_steps=1",
        "finetune.lr=1e-3",
        "data.batch_size=8",
        "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        f"+data.shifts.shift_full={{root:{data_root}/shift_full}}",
        f"+data.shifts.shift_sub={{root:{data_root}/shift_sub}}",
        *(extra or []),
    ]
    return compose_cfg(overrides, out_dir)
