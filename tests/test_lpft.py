"""``finetune=lpft``: a linear probe on cached features, then end to end from the probe's head."""

import json

import pytest
import torch

from tests.conftest import tiny_cfg
from tests.sweep_helpers import make_data
from wiseft.config.schema import FinetuneConfig, ProbeConfig, to_settings
from wiseft.io.checkpoints import load_weights
from wiseft.models.linear_probe import LinearProbeModule
from wiseft.models.module import WiSEFTModule
from wiseft.pipeline.lpft import PROBE_CKPT, probe_recipe
from wiseft.pipeline.train import train
from wiseft.review.results import read_curves, run_method_label


def _heads(mp: pytest.MonkeyPatch) -> list[tuple[str, dict[str, torch.Tensor]]]:
    """Records every fit's starting weights: ``("probe" | "e2e", state)``."""
    seen: list[tuple[str, dict[str, torch.Tensor]]] = []

    def on_fit_start(self) -> None:
        stage = "probe" if isinstance(self, LinearProbeModule) else "e2e"
        seen.append((stage, {k: v.detach().clone() for k, v in self.model.state_dict().items()}))

    mp.setattr(WiSEFTModule, "on_fit_start", on_fit_start)
    return seen


def _extra(root) -> list[str]:
    # The head's weights are ~100 / sqrt(dim) (CLIP's temperature): the probe takes a large step size to move them.
    return ["finetune=lpft", f"finetune.feature_cache={root / 'cache'}", "finetune.probe.lr=3.0",
            "finetune.probe.epochs=2", "finetune.probe.warmup_steps=1", "wiseft.alphas=[0.0,0.5,1.0]"]


@pytest.fixture(scope="module")
def lpft_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("lpft")
    data = make_data(root)
    cfg = tiny_cfg(data, root / "out", _extra(root))
    mp = pytest.MonkeyPatch()
    try:
        fits = _heads(mp)
        objective = train(cfg)
    finally:
        mp.undo()
    return cfg, root, fits, objective


def test_second_stage_starts_from_the_probes_head(lpft_run):
    _, root, fits, _ = lpft_run
    assert [stage for stage, _ in fits] == ["probe", "e2e"]
    (_, at_probe), (_, at_e2e) = fits
    probe, meta = load_weights(root / "out" / "checkpoints" / PROBE_CKPT)
    assert set(probe) == {"head.weight", "head.bias"} and meta["stage"] == "lpft_probe"
    for key in probe:
        assert torch.equal(at_e2e[key], probe[key]), key  # exactly the probe's head
        assert not torch.equal(at_probe[key], probe[key]), key  # which the first stage trained
    # The probe trained the head alone: the second stage starts from the zero-shot image encoder.
    assert all(torch.equal(v, at_e2e[k]) for k, v in at_probe.items() if not k.startswith("head."))


def test_wiseft_interpolates_from_the_zero_shot_model_not_the_probe(lpft_run):
    _, root, fits, objective = lpft_run
    out = root / "out"
    theta_0, _ = load_weights(out / "checkpoints" / "zeroshot.safetensors")
    theta_1, meta = load_weights(out / "checkpoints" / "finetuned.safetensors")
    at_probe = fits[0][1]
    assert theta_0.keys() == at_probe.keys() and all(torch.equal(v, at_probe[k]) for k, v in theta_0.items())
    assert meta["finetune"] == "lpft"
    assert not torch.equal(theta_0["image_encoder.conv1.weight"], theta_1["image_encoder.conv1.weight"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finetune"] == "lpft"
    assert run_method_label(summary) == "LP-FT / WiSE-FT (weight space)"  # how a comparison names these rows
    assert objective == pytest.approx(summary["chosen"]["avg_ref_shifts"])
    curves = read_curves(out)
    assert set(curves) == {"wiseft", "ensemble"} and [r["alpha"] for r in curves["wiseft"]] == [0.0, 0.5, 1.0]
    for name in ("results.csv", "curve.png", "checkpoints/wiseft_chosen.safetensors"):
        assert (out / name).is_file(), name


def test_relaunch_reads_the_probe_instead_of_training_it_again(lpft_run, tmp_path):
    cfg, root, _, _ = lpft_run
    out = root / "out"
    results = (out / "results.csv").read_text()
    # A run killed in the second stage before any Lightning checkpoint: only the probe (and the config) remain.
    (out / "checkpoints" / "lightning" / "last.ckpt").unlink()
    for name in ("summary.json", "results.csv", "results.jsonl", "sweep_progress.jsonl"):
        (out / name).unlink()
    mp = pytest.MonkeyPatch()
    try:
        fits = _heads(mp)
        train(cfg)
    finally:
        mp.undo()
    assert [stage for stage, _ in fits] == ["e2e"]
    probe, _ = load_weights(out / "checkpoints" / PROBE_CKPT)
    assert all(torch.equal(fits[0][1][k], v) for k, v in probe.items())
    assert (out / "results.csv").read_text() == results  # the same run, to the bit


def test_probe_recipe_is_linear_mode_with_the_probe_settings():
    recipe = probe_recipe(FinetuneConfig(mode="lpft", lr=3e-5, epochs=10, feature_cache="/c",
                                         probe=ProbeConfig(lr=1e-2, weight_decay=0.0, epochs=4, warmup_steps=7)))
    assert (recipe.mode, recipe.lr, recipe.weight_decay, recipe.epochs, recipe.warmup_steps, recipe.feature_cache) \
        == ("linear", 1e-2, 0.0, 4, 7, "/c")


def test_imagenet_recipe_chains_the_linear_and_end_to_end_recipes():
    from tests.conftest import compose_cfg

    cfg = compose_cfg(["experiment=vit_b16_lpft", "paths.data_dir=/data"])
    f = to_settings(cfg).finetune
    assert (f.mode, f.lr, f.epochs, f.warmup_steps, f.grad_clip, f.augment) == ("lpft", 3e-5, 10, 500, 1.0, True)
    assert (f.probe.lr, f.probe.weight_decay, f.probe.epochs, f.probe.warmup_steps) == (1e-3, 0.1, 10, 500)
    assert cfg.trainer.max_epochs == 10 and cfg.finetune.feature_cache.endswith("/features")
