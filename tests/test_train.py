"""End to end: ``train(cfg)`` on a tiny model and generated images."""

import csv
import json

import pytest
import torch
from omegaconf import OmegaConf

from tests.conftest import make_image_data, tiny_cfg
from wiseft.data.datamodule import WiSEFTDataModule
from wiseft.io.checkpoints import load_weights
from wiseft.models.classifier import ClassificationHead, ImageClassifier
from wiseft.models.factory import build_clip
from wiseft.pipeline.train import train
from wiseft.sweep.evaluate import evaluate


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    data = make_image_data(root / "data")
    cfg = tiny_cfg(data, root / "out", ["wiseft.alphas=[0.0,0.5,1.0]"])
    objective = train(cfg)
    return cfg, root / "out", objective


def test_writes_every_output(run):
    _, out, objective = run
    for name in ("results.csv", "results.jsonl", "summary.json", "curve.png",
                 "checkpoints/zeroshot.safetensors", "checkpoints/finetuned.safetensors",
                 "checkpoints/wiseft_chosen.safetensors"):
        assert (out / name).is_file(), name
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [(r["method"], r["alpha"]) for r in records] == [(m, a) for m in ("wiseft", "ensemble") for a in (0, 0.5, 1)]
    with (out / "results.csv").open() as f:
        assert [(r["method"], float(r["alpha"])) for r in csv.DictReader(f)] == [
            (r["method"], r["alpha"]) for r in records]
    rows = [{k: v for k, v in r.items() if k != "method"} for r in records if r["method"] == "wiseft"]
    ensemble = [{k: v for k, v in r.items() if k != "method"} for r in records if r["method"] == "ensemble"]
    datasets = ("reference_val", "reference", "shift_full", "shift_sub")
    accuracy_cols = {*datasets, "avg_shifts", "avg_ref_shifts"}
    calibration_cols = {f"{m}_{c}" for m in ("ece", "nll") for c in (*datasets, "avg_shifts")}
    assert set(rows[0]) == {"alpha"} | accuracy_cols | calibration_cols
    for row in rows + ensemble:
        assert all(0.0 <= row[c] <= 100.0 for c in accuracy_cols | {c for c in calibration_cols if "ece" in c})
        assert all(row[c] >= 0.0 for c in calibration_cols)
        assert row["avg_shifts"] == pytest.approx((row["shift_full"] + row["shift_sub"]) / 2)
        assert row["avg_ref_shifts"] == pytest.approx((row["reference"] + row["avg_shifts"]) / 2)
        assert row["ece_avg_shifts"] == pytest.approx((row["ece_shift_full"] + row["ece_shift_sub"]) / 2)
    # Both methods start and end at the same two models.
    assert ensemble[0] == rows[0] and ensemble[-1] == rows[-1]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "wiseft" and set(summary["methods"]) == {"wiseft", "ensemble"}
    assert summary["zeroshot"] == rows[0] and summary["finetuned"] == rows[-1]
    assert summary["methods"]["ensemble"]["chosen"] in ensemble
    assert summary["selected_on"] == "reference_val"
    best_val = max(r["reference_val"] for r in rows)
    assert summary["chosen"]["reference_val"] == best_val
    assert objective == pytest.approx(summary["chosen"]["avg_ref_shifts"])
    assert set(summary["optimal_alpha"]) == accuracy_cols | calibration_cols
    lowest_ece = min(r["ece_reference"] for r in rows)  # calibration columns are minimised
    assert summary["optimal"]["ece_reference"] == lowest_ece


def _fresh_classifier(path):
    state, meta = load_weights(path)
    bundle = build_clip(meta["model"]["name"])
    head = ClassificationHead(torch.zeros_like(state["head.weight"]))
    model = ImageClassifier(bundle.model.visual, head)
    model.load_state_dict(state)
    return model, bundle, meta


def test_chosen_checkpoint_reloads_and_reproduces_accuracy(run):
    cfg, out, _ = run
    summary = json.loads((out / "summary.json").read_text())
    model, bundle, meta = _fresh_classifier(out / "checkpoints" / "wiseft_chosen.safetensors")
    assert meta["alpha"] == summary["chosen_alpha"]
    assert meta["classnames"] == ["blue", "green", "red"]
    from wiseft.config.schema import to_settings

    settings = to_settings(cfg)
    dm = WiSEFTDataModule(settings.data, seed=settings.seed)
    dm.check()
    dm.set_transforms(bundle.train_transform, bundle.eval_transform)
    loaders = {s.name: dm.eval_loader(s) for s in dm.eval_sets}
    acc = evaluate(model, loaders)
    for name, value in acc.items():
        assert value == pytest.approx(summary["chosen"][name], abs=1e-6), name


@pytest.mark.parametrize("ckpt,row", [("zeroshot", "zeroshot"), ("finetuned", "finetuned")])
def test_sweep_endpoints_equal_direct_evaluation(run, ckpt, row):
    cfg, out, _ = run
    summary = json.loads((out / "summary.json").read_text())
    model, bundle, _ = _fresh_classifier(out / "checkpoints" / f"{ckpt}.safetensors")
    from wiseft.config.schema import to_settings

    dm = WiSEFTDataModule(to_settings(cfg).data)
    dm.check()
    dm.set_transforms(bundle.train_transform, bundle.eval_transform)
    acc = evaluate(model, {s.name: dm.eval_loader(s) for s in dm.eval_sets})
    assert acc == {k: pytest.approx(summary[row][k], abs=1e-9) for k in acc}


def test_config_saved_with_results(run):
    cfg, out, _ = run
    saved = OmegaConf.load(out / "config.yaml")
    assert saved.finetune == cfg.finetune and saved.wiseft.alphas == [0.0, 0.5, 1.0]
    assert saved.paths.output_dir == str(out)


def test_linear_mode_trains_the_head_only(tmp_path, image_root):
    cfg = tiny_cfg(image_root, tmp_path / "out", ["finetune=linear", "finetune.epochs=1", "finetune.warmup_steps=1",
                                                  "wiseft.alphas=[0.0,1.0]", "wiseft.save_checkpoints=true"])
    train(cfg)
    zs, _ = load_weights(tmp_path / "out" / "checkpoints" / "zeroshot.safetensors")
    ft, _ = load_weights(tmp_path / "out" / "checkpoints" / "finetuned.safetensors")
    encoder_keys = [k for k in zs if k.startswith("image_encoder.")]
    assert encoder_keys and all(torch.equal(zs[k], ft[k]) for k in encoder_keys)
    assert not torch.equal(zs["head.weight"], ft["head.weight"])


def test_same_seed_same_weights(tmp_path, image_root):
    finals = []
    for name in ("a", "b"):
        cfg = tiny_cfg(image_root, tmp_path / name, ["wiseft.alphas=[0.0,1.0]"])
        train(cfg)
        finals.append(load_weights(tmp_path / name / "checkpoints" / "finetuned.safetensors")[0])
    assert all(torch.equal(finals[0][k], finals[1][k]) for k in finals[0])
