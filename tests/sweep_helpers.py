"""A tiny classifier with two endpoints and an image DataModule with odd-sized evaluation sets."""

from __future__ import annotations

from pathlib import Path

import torch

from tests.conftest import make_image_data, tiny_cfg
from wiseft.config.schema import to_settings
from wiseft.data.datamodule import WiSEFTDataModule
from wiseft.models.factory import build_clip
from wiseft.models.zeroshot import zero_shot_classifier


def make_data(root: Path) -> Path:
    """Reference train/val/test (9 images each) and two shifts (9 and 6 images)."""
    return make_image_data(root / "data", train_per_class=4)


def tiny_eval_setup(root: Path, eval_batch_size: int = 4):
    """``(model, theta_0, theta_1, datamodule)``: theta_1 is theta_0 plus noise, so predictions change with alpha."""
    data = make_data(root)
    cfg = tiny_cfg(data, root / "out", [f"data.eval_batch_size={eval_batch_size}"])
    settings = to_settings(cfg)
    datamodule = WiSEFTDataModule(settings.data, seed=0)
    datamodule.check()
    torch.manual_seed(0)
    bundle = build_clip("tiny-vit")
    model = zero_shot_classifier(bundle.model, bundle.tokenizer, datamodule.classnames, ["a {} image"]).eval()
    datamodule.set_transforms(bundle.train_transform, bundle.eval_transform)
    theta_0 = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(1)
    theta_1 = {k: v + 0.5 * v.std().nan_to_num(0.1) * torch.randn(v.shape, generator=g) if v.is_floating_point()
               else v.clone() for k, v in theta_0.items()}
    return model, theta_0, theta_1, datamodule
