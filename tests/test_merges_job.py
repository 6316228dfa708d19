"""Weight merging end to end: the Fisher path in the training job, and model soups / Model Stock over a multirun."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.conftest import compose_cfg, make_image_data, tiny_cfg
from wiseft.config.schema import FisherConfig, to_settings
from wiseft.data.datamodule import WiSEFTDataModule, held_out_split
from wiseft.errors import CheckpointError, ConfigError
from wiseft.io.checkpoints import load_weights, save_weights
from wiseft.methods.fisher import load_fisher
from wiseft.models.factory import build_clip
from wiseft.pipeline.merge import _common_held_out, merge_multirun
from wiseft.pipeline.train import fisher_config, train
from wiseft.review.multirun import load_sweep
from wiseft.review.results import read_curves
from wiseft.sweep.fisher_path import FisherPath, fisher_file

REPO = Path(__file__).resolve().parents[1]
ALPHAS = [0.0, 0.5, 1.0]


@pytest.fixture(scope="module")
def multirun(tmp_path_factory):
    """Two tiny fine-tuning runs that differ only in their seed, each with the Fisher path on 8 examples.

    The tiny model's random weights are written to a file first: runs merged together start from one pretrained
    model (a randomly initialised one would differ with the seed).
    """
    root = tmp_path_factory.mktemp("merges")
    data = make_image_data(root / "data")
    pretrained = root / "tiny_vit.safetensors"
    save_file({k: v.contiguous() for k, v in build_clip("tiny-vit").model.state_dict().items()}, str(pretrained))
    sweep = root / "sweep"
    for seed in (0, 1):
        train(tiny_cfg(data, sweep / str(seed), [f"seed={seed}", f"model.pretrained={pretrained}",
                                                 "wiseft.alphas=[0.0,0.5,1.0]", "wiseft.fisher.examples=8",
                                                 "wiseft.fisher.chunk=4"]))
    return sweep


def _rows(folder: Path, method: str) -> list[dict]:
    return read_curves(folder)[method]


def test_fisher_path_is_evaluated_beside_wiseft_and_its_fishers_are_stored(multirun):
    job = multirun / "0"
    curves = read_curves(job)
    assert list(curves) == ["wiseft", "fisher", "ensemble"]
    assert [r["alpha"] for r in curves["fisher"]] == ALPHAS
    # Both paths share their endpoints exactly: alpha 0 is the zero-shot model, alpha 1 the fine-tuned one.
    for i in (0, -1):
        assert curves["fisher"][i] == curves["wiseft"][i]
    summary = json.loads((job / "summary.json").read_text())
    assert set(summary["methods"]) == {"wiseft", "fisher", "ensemble"}
    theta_0, _ = load_weights(job / "checkpoints" / "zeroshot.safetensors")
    for endpoint in ("zeroshot", "finetuned"):
        fisher, meta = load_fisher(fisher_file(job, endpoint))
        assert meta["examples"] == 8 and meta["labels"] == "sampled" and meta["seed"] == 0
        assert fisher.keys() == {k for k in theta_0 if theta_0[k].is_floating_point()}
        assert all((v >= 0).all() for v in fisher.values()) and any((v > 0).any() for v in fisher.values())


def test_a_relaunch_reuses_the_stored_fisher_of_the_same_weights(multirun):
    job = multirun / "0"
    theta_0, _ = load_weights(job / "checkpoints" / "zeroshot.safetensors")
    stored, _ = load_fisher(fisher_file(job, "zeroshot"))
    factory = FisherPath(FisherConfig(examples=8), seed=0, output_dir=job)
    # No trainer needed: a stored Fisher of these weights, examples, labels and seed is read back, not estimated.
    fisher = factory._fisher(None, None, theta_0, list(range(8)), "zeroshot")
    assert all(torch.equal(fisher[k], stored[k]) for k in stored)


def test_fisher_config_values_are_checked():
    with pytest.raises(ConfigError, match=r"wiseft\.fisher\.examples: must be 0 \(off\) or positive, got -1"):
        to_settings(compose_cfg(["wiseft.fisher.examples=-1"], "/tmp/unused"))
    assert to_settings(compose_cfg([], "/tmp/unused")).wiseft.fisher.examples == 0  # off by default


def test_fisher_path_is_skipped_with_a_warning_for_flyp_only(caplog):
    e2e = to_settings(compose_cfg(["wiseft.fisher.examples=64"], "/tmp/unused"))
    assert fisher_config(e2e).examples == 64 and not caplog.records
    flyp = to_settings(compose_cfg(["finetune=flyp", "wiseft.fisher.examples=64"], "/tmp/unused"))
    assert fisher_config(flyp).examples == 0
    assert "not implemented for finetune=flyp" in caplog.text


def test_merge_writes_a_run_folder_with_every_method(multirun, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "merged"
    assert merge_multirun(multirun, out=out, device="cpu", logger="wandb") == [out]
    for name in ("config.yaml", "results.csv", "results.jsonl", "summary.json", "curve.png",
                 "checkpoints/uniform_soup.safetensors", "checkpoints/greedy_soup.safetensors",
                 "checkpoints/model_stock.safetensors"):
        assert (out / name).is_file(), name
    curves = read_curves(out)
    assert list(curves) == ["uniform_soup", "greedy_soup", "model_stock"]
    assert all([r["alpha"] for r in rows] == ALPHAS for rows in curves.values())
    zeroshot = _rows(multirun / "0", "wiseft")[0]
    for rows in curves.values():  # alpha 0 is the runs' common zero-shot model, evaluated on the same data
        assert {k: rows[0][k] for k in zeroshot} == zeroshot
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "uniform_soup" and set(summary["methods"]) == set(curves)
    assert summary["methods"]["model_stock"]["chosen_alpha"] == 1.0  # no alpha search
    merge = summary["merge"]
    assert merge["jobs"] == ["0", "1"] and merge["held_out"]["source"] == "data.reference.val"
    assert merge["uniform_soup"]["ingredients"] == ["0", "1"]
    runs = [load_weights(multirun / j / "checkpoints" / "finetuned.safetensors")[0] for j in ("0", "1")]
    runs_0 = runs[0]
    greedy = merge["greedy_soup"]
    assert greedy["order"][0] == max(greedy["held_out"], key=lambda j: (greedy["held_out"][j], -int(j)))
    assert all(s["accepted"] == (s["accuracy"] > s["best_before"]) for s in greedy["steps"])
    stock = merge["model_stock"]
    assert stock["ratio_min"] <= stock["ratio_mean"] <= stock["ratio_max"] and stock["runs"] == ["0", "1"]
    assert set(stock["ratios"]) == {k for k, v in runs_0.items() if v.is_floating_point()}
    # The uniform soup's checkpoint is the average of the two runs, loadable like any classifier checkpoint.
    soup, meta = load_weights(out / "checkpoints" / "uniform_soup.safetensors")
    torch.testing.assert_close(soup["head.weight"], (runs[0]["head.weight"] + runs[1]["head.weight"]) / 2)
    assert meta["method"] == "uniform_soup" and meta["classnames"] == ["blue", "green", "red"]
    # One W&B run per method, in the sweep's group; the review reads the folder like any run.
    assert len(list((out / "wandb").glob("offline-run-*"))) == 3
    job = load_sweep(out).jobs[0]
    assert job.summary["method"] == "uniform_soup" and [r["alpha"] for r in job.rows] == ALPHAS


def _copy_job(src: Path, dst: Path, meta_change: dict | None = None, zeroshot_change: bool = False) -> None:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("wandb", "csv"))
    if meta_change:
        path = dst / "checkpoints" / "finetuned.safetensors"
        state, meta = load_weights(path)
        meta = {k: v for k, v in meta.items() if k != "format"}
        for key, value in meta_change.items():
            if key.startswith("model."):
                meta["model"] = {**meta["model"], key.removeprefix("model."): value}
            else:
                meta[key] = value
        save_weights(state, path, meta)
    if zeroshot_change:
        path = dst / "checkpoints" / "zeroshot.safetensors"
        state, meta = load_weights(path)
        state["head.weight"] = state["head.weight"] + 1.0
        save_weights(state, path, {k: v for k, v in meta.items() if k != "format"})


def _merge_cli(folder: Path, out: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "WISEFT_PROGRESS": "0"}
    return subprocess.run([sys.executable, "-m", "wiseft.pipeline.merge", str(folder), "--out", str(out), *args],
                          env=env, capture_output=True, text=True, timeout=300)


def test_one_run_is_refused_in_one_line_before_any_work(multirun, tmp_path):
    single = tmp_path / "single"
    _copy_job(multirun / "0", single / "0")
    out = tmp_path / "out"
    result = _merge_cli(single, out, "--methods", "model_stock")
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == ["error: merging needs two or more fine-tuned runs (model_stock), but the multirun has only job "
                     "'0' (runs are merged when they differ only in the --vary seed keys)"]
    assert not out.exists()


@pytest.mark.parametrize("change,message", [
    ({"model.name": "toy-clip"}, "jobs '0' and '2' cannot be merged: model.name is 'tiny-vit' in '0' but 'toy-clip' "
                                 "in '2'"),
    ({"classnames": ["blue", "red"]}, r"jobs '0' and '2' cannot be merged: their classes differ \('0': 3 classes "
                                      r"\[blue, green, red\]; '2': 2 classes \[blue, red\]\)"),
])
def test_runs_of_different_architectures_or_classes_are_refused_naming_both(multirun, tmp_path, change, message):
    folder = tmp_path / "mixed"
    for job in ("0", "1"):
        _copy_job(multirun / job, folder / job)
    _copy_job(multirun / "1", folder / "2", meta_change=change)
    with pytest.raises(CheckpointError, match=message):
        merge_multirun(folder, out=tmp_path / "out", device="cpu", logger="none")
    assert not (tmp_path / "out").exists()


def test_runs_from_different_zero_shot_weights_are_refused(multirun, tmp_path):
    folder = tmp_path / "mixed"
    _copy_job(multirun / "0", folder / "0")
    _copy_job(multirun / "1", folder / "1", zeroshot_change=True)
    with pytest.raises(CheckpointError, match=r"jobs '0' and '1' start from different zero-shot weights \(first "
                                              r"difference: 'head\.weight'"):
        merge_multirun(folder, out=tmp_path / "out", device="cpu", logger="none")


def test_unknown_method_and_out_inside_the_multirun_are_refused(multirun, tmp_path):
    with pytest.raises(ConfigError, match="--methods: unknown method 'soupe'"):
        merge_multirun(multirun, methods=["soupe"], out=tmp_path / "out")
    with pytest.raises(ConfigError, match="is inside the multirun folder"):
        merge_multirun(multirun, out=multirun / "merged")


class _Run:
    def __init__(self, seed: int) -> None:
        self.seed = seed


def test_held_out_data_without_a_val_set_is_what_no_run_trained_on(tmp_path):
    data = make_image_data(tmp_path / "data", train_per_class=20)
    cfg = tiny_cfg(data, tmp_path / "out", ["data.reference.val=null", "data.reference.val_fraction=0.5"])
    datamodule = WiSEFTDataModule(to_settings(cfg).data, seed=0)
    datamodule.check()
    samples, source = _common_held_out(datamodule, [_Run(0), _Run(1)])
    assert samples and "held out by every run (seeds 0, 1)" in source
    everything = datamodule.reference_samples()
    for seed in (0, 1):
        trained_on = set(held_out_split(everything, 0.5, seed)[0])
        assert not trained_on & set(samples)
    assert _common_held_out(datamodule, [_Run(3), _Run(3)])[0] is None  # one seed: the run's own split


def test_flyp_runs_merge_both_towers_and_take_the_head_of_the_merged_text_tower(tmp_path):
    from wiseft.models.classifier import ClassificationHead
    from wiseft.models.text_head import TextHeadClassifier

    templates = ["a {} image", "{}"]
    data = make_image_data(tmp_path / "data")
    pretrained = tmp_path / "tiny_vit.safetensors"
    save_file({k: v.contiguous() for k, v in build_clip("tiny-vit").model.state_dict().items()}, str(pretrained))
    sweep = tmp_path / "sweep"
    for seed in (0, 1):
        train(tiny_cfg(data, sweep / str(seed), [f"seed={seed}", "finetune=flyp", f"model.pretrained={pretrained}",
                                                 "wiseft.alphas=[0.0,1.0]", f"data.templates={templates}"]))
    out = tmp_path / "merged"
    assert merge_multirun(sweep, methods=["uniform_soup"], out=out, device="cpu", logger="none") == [out]
    runs = [load_weights(sweep / s / "checkpoints" / "finetuned.safetensors")[0] for s in ("0", "1")]
    soup, meta = load_weights(out / "checkpoints" / "uniform_soup.safetensors")
    key = "text.ln_final.weight"
    assert not torch.equal(runs[0][key], runs[1][key])  # the text towers were fine-tuned, differently
    torch.testing.assert_close(soup[key], (runs[0][key] + runs[1][key]) / 2)
    # The soup's head is the zero-shot head of its own (averaged) text tower, not the average of the runs' heads.
    bundle = build_clip("tiny-vit", str(pretrained))
    model = TextHeadClassifier.from_clip(bundle.model, bundle.tokenizer, meta["classnames"], templates,
                                         ClassificationHead(torch.zeros_like(soup["head.weight"])))
    model.load_state_dict(soup)
    model.rebuild_head()
    torch.testing.assert_close(model.head.weight, soup["head.weight"])
    assert not torch.allclose(soup["head.weight"], (runs[0]["head.weight"] + runs[1]["head.weight"]) / 2)
    # Alpha 0 is the runs' common zero-shot model.
    zeroshot = _rows(sweep / "0", "wiseft")[0]
    assert {k: _rows(out, "uniform_soup")[0][k] for k in zeroshot} == zeroshot
