"""``finetune=linear`` end to end: cached features, head-only training, the LC sweep from logits."""

import json

import pytest
import torch

import wiseft.sweep.callback as sweep_callback
from tests.conftest import tiny_cfg
from tests.sweep_helpers import make_data
from wiseft.config.schema import to_settings
from wiseft.data.datamodule import WiSEFTDataModule
from wiseft.data.datasets import LabeledImageDataset
from wiseft.io.checkpoints import load_weights
from wiseft.models.classifier import ClassificationHead, ImageClassifier
from wiseft.models.factory import build_clip
from wiseft.pipeline.train import train
from wiseft.review.results import read_curves
from wiseft.sweep.engine import run_sweep
from wiseft.sweep.summary import Columns


@pytest.fixture(scope="module")
def linear_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("linear")
    data = make_data(root)
    cache = root / "cache"
    # The head's weights are ~100 / sqrt(dim) (CLIP's temperature): it takes a large step size to move them.
    extra = ["finetune=linear", f"finetune.feature_cache={cache}", "finetune.epochs=3", "finetune.lr=3.0",
             "wiseft.alphas=[0.0,0.05,0.1,0.2,0.5,1.0]"]
    mp = pytest.MonkeyPatch()
    decoded = []
    original = LabeledImageDataset.load_image
    mp.setattr(LabeledImageDataset, "load_image", lambda self, i: (decoded.append(i), original(self, i))[1])
    # The weight-space sweep must not run in linear mode: the logit sweep replaces it.
    mp.setattr(sweep_callback, "sweep_stats", lambda *a, **k: pytest.fail("weight-space sweep ran"))
    try:
        train(tiny_cfg(data, root / "out1", extra))
        first_decodes = len(decoded)
        entries = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
        decoded.clear()
        train(tiny_cfg(data, root / "out2", [*extra, "finetune.lr=1.0"]))
        second_decodes = len(decoded)
    finally:
        mp.undo()
    return root, data, cache, entries, first_decodes, second_decodes


def test_features_computed_once_then_read_from_cache(linear_run):
    _, _, cache, entries, first_decodes, second_decodes = linear_run
    # train + val + test + 2 shifts: one entry each, each image decoded once for all epochs and the sweep.
    assert len(entries) == 5
    assert first_decodes == 12 + 9 + 9 + 9 + 6
    assert second_decodes == 0  # another learning rate, same model and data: no image is decoded again
    assert {p.name: p.stat().st_mtime_ns for p in cache.iterdir()} == entries


def test_only_the_head_trained_and_the_sweep_matches_weight_space(linear_run):
    root, data, *_ = linear_run
    out = root / "out1"
    theta_0, meta = load_weights(out / "checkpoints" / "zeroshot.safetensors")
    theta_1, _ = load_weights(out / "checkpoints" / "finetuned.safetensors")
    assert all(torch.equal(v, theta_1[k]) for k, v in theta_0.items() if not k.startswith("head."))
    assert not torch.equal(theta_0["head.weight"], theta_1["head.weight"])
    summary = json.loads((out / "summary.json").read_text())
    curves = read_curves(out)
    rows = curves["wiseft"]
    assert curves["ensemble"] == rows  # only the head differs: the logits are linear in alpha

    # The same endpoints swept in weight space over the images, in this process.
    bundle = build_clip(meta["model"]["name"])
    model = ImageClassifier(bundle.model.visual, ClassificationHead(torch.zeros_like(theta_0["head.weight"])))
    cfg = tiny_cfg(data, out, ["finetune=linear"])
    dm = WiSEFTDataModule(to_settings(cfg).data)
    dm.check()
    dm.set_transforms(bundle.eval_transform, bundle.eval_transform)
    sets = dm.eval_sets
    columns = Columns(sets[0].name, sets[1].name, tuple(s.name for s in sets[2:]))
    alphas = [r["alpha"] for r in rows]
    expected = run_sweep(model, theta_0, theta_1, alphas, {s.name: dm.eval_loader(s) for s in sets}, columns)
    for got, want in zip(rows, expected["wiseft"], strict=True):
        calibration = [k for k in want if k.startswith(("ece_", "nll_"))]
        assert calibration and {k: got[k] for k in calibration} == pytest.approx({k: want[k] for k in calibration})
        # The same integer counts, so the same floats.
        assert {k: v for k, v in got.items() if k not in calibration} == {
            k: v for k, v in want.items() if k not in calibration}
    assert len({r["reference"] for r in rows}) > 1  # the head learned: accuracy moves along the grid
    assert summary["num_examples"] == {"reference_val": 9, "reference": 9, "shift_full": 9, "shift_sub": 6}
