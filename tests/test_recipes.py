"""The paper's recipes (``experiment=...``): each composes to the reference settings and runs end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants as hf_constants
from open_clip.transform import PreprocessCfg, image_transform_v2
from torchvision import transforms as T

from tests.conftest import CONF_DIR, compose_cfg
from tests.imagenet_trees import make_imagenet_trees
from wiseft.config.schema import to_settings
from wiseft.models.factory import ClipBundle
from wiseft.models.weights import resolve_weights

PAPER_RECIPES = {  # experiment -> (architecture, finetune mode)
    "vit_l14_336_e2e": ("ViT-L-14-336-quickgelu", "e2e"),
    "vit_l14_336_lc": ("ViT-L-14-336-quickgelu", "linear"),
    "vit_b16_e2e": ("ViT-B-16-quickgelu", "e2e"),
    "vit_b32_e2e": ("ViT-B-32-quickgelu", "e2e"),
}
EXPERIMENTS = sorted(p.stem for p in Path(CONF_DIR, "experiment").glob("*.yaml"))
COLUMNS = ["imagenet_val", "imagenet", "imagenet_v2", "imagenet_r", "imagenet_sketch", "objectnet", "imagenet_a"]


@pytest.fixture(scope="module")
def trees(tmp_path_factory) -> Path:
    return make_imagenet_trees(tmp_path_factory.mktemp("recipes"))


def test_every_paper_recipe_has_a_config():
    assert set(PAPER_RECIPES) <= set(EXPERIMENTS)


@pytest.mark.parametrize("experiment", sorted(PAPER_RECIPES))
def test_recipe_composes_to_the_reference_settings(experiment, monkeypatch):
    arch, mode = PAPER_RECIPES[experiment]
    cfg = compose_cfg([f"experiment={experiment}", "paths.data_dir=/data"])
    settings = to_settings(cfg)
    assert settings.model.name == arch and settings.model.pretrained == "openai"
    assert settings.finetune.mode == mode
    assert settings.data.batch_size == 512
    assert settings.data.reference.train.root == "/data/imagenet/train"
    assert list(settings.data.shifts) == COLUMNS[2:]
    assert cfg.trainer.accelerator == "gpu" and cfg.trainer.max_epochs == settings.finetune.epochs == 10
    assert cfg.trainer.gradient_clip_val == settings.finetune.grad_clip == 1.0
    if mode == "e2e":
        f = settings.finetune
        assert (f.lr, f.weight_decay, f.warmup_steps, f.augment) == (3e-5, 0.1, 500, True)
    # The activation follows OpenAI's weights; nothing is downloaded for this check.
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    source = resolve_weights(settings.model.name, settings.model.pretrained, fetch=False)
    assert source.quick_gelu is True and source.preprocess["image_interpolation"] == "bicubic"


@pytest.mark.parametrize("experiment", sorted(PAPER_RECIPES))
def test_recipe_train_transform(experiment):
    """What the recipe trains on: open_clip's augmentation (E2E) or the evaluation preprocessing (LC)."""
    settings = to_settings(compose_cfg([f"experiment={experiment}"]))
    train = image_transform_v2(PreprocessCfg(size=224), is_train=True, aug_cfg=dict(settings.model.aug_cfg))
    evaluation = image_transform_v2(PreprocessCfg(size=224), is_train=False)
    bundle = ClipBundle(torch.nn.Identity(), train, evaluation, str)
    used = bundle.training_transform(settings.finetune.augment)
    if PAPER_RECIPES[experiment][1] == "e2e":
        assert used is train
        assert not any(isinstance(t, T.RandomHorizontalFlip) for t in train.transforms)
        crop = next(t for t in train.transforms if isinstance(t, T.RandomResizedCrop))
        assert tuple(crop.scale) == (0.9, 1.0) and tuple(crop.ratio) == pytest.approx((3 / 4, 4 / 3))
    else:  # the reference code's LC trains on un-augmented images
        assert used is evaluation
        assert not any(isinstance(t, (T.RandomResizedCrop, T.RandomHorizontalFlip)) for t in evaluation.transforms)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_with_a_stand_in_model(experiment, tmp_path):
    cfg = compose_cfg([f"experiment={experiment}", "model=tiny_random", f"paths.data_dir={tmp_path}"])
    assert cfg.model.name == "tiny-vit"
    to_settings(cfg)


@pytest.mark.parametrize("experiment", sorted(PAPER_RECIPES))
def test_recipe_runs_with_fast_dev_run(experiment, trees, tmp_path):
    from wiseft.pipeline.train import train

    out = tmp_path / "out"
    cfg = compose_cfg([
        f"experiment={experiment}",
        "model=tiny_random",
        "trainer=cpu",
        "trainer.fast_dev_run=true",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "logger=csv",
        "callbacks=none",
        f"paths.data_dir={trees}",
        "data.templates=['a photo of a {}.']",
        "data.num_workers=0",
        "wiseft.alphas=[1.0]",
    ], out)
    objective = train(cfg)
    summary = json.loads((out / "summary.json").read_text())
    accuracy_cols = [c for c in summary["zeroshot"] if c != "alpha" and not c.startswith(("er_", "ece_", "nll_"))]
    assert accuracy_cols == [*COLUMNS, "avg_shifts", "avg_ref_shifts"]
    ece_cols = [c for c in summary["zeroshot"] if c.startswith("ece_")]
    assert ece_cols == [f"ece_{c}" for c in (*COLUMNS, "avg_shifts")]
    assert all(0.0 <= summary["chosen"][c] <= 100.0 for c in accuracy_cols)
    # The shipped effective-robustness fits apply to the ImageNet columns (none is published for ImageNet-A).
    er_cols = {c for c in summary["zeroshot"] if c.startswith("er_")}
    assert er_cols == {"er_imagenet_v2", "er_imagenet_r", "er_imagenet_sketch", "er_objectnet", "er_avg_shifts"}
    assert objective == pytest.approx(summary["chosen"]["avg_ref_shifts"])
    assert (out / "checkpoints" / "wiseft_chosen.safetensors").is_file()
