"""DDP on 2 CPU processes (gloo), Hydra multiruns with DDP, and the submitit launcher (local executor).

These start real processes through ``train.py``: slow (tens of seconds each on 2 cores).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.sweep_helpers import make_data

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


def _overrides(data: Path, *extra: str) -> list[str]:
    return [
        "model=tiny_random", "data=imagefolder", f"paths.data_dir={data}", "~experiment", "logger=csv",
        "callbacks=none", "finetune.epochs=1", "finetune.warmup_steps=1", "finetune.lr=1e-3", "data.batch_size=4",
        "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
        f"+data.shifts.shift_full={{root:{data}/shift_full}}", f"+data.shifts.shift_sub={{root:{data}/shift_sub}}",
        "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", *extra,
    ]


def _run(args: list[str], tmp: Path, timeout: int = 600, **env: str) -> subprocess.CompletedProcess:
    environ = {**os.environ, "WISEFT_LOG_DIR": str(tmp / "logs"), "WANDB_SILENT": "true",
               "WANDB_DIR": str(tmp / "wandb_home"), "WANDB_CACHE_DIR": str(tmp / "wandb_home"),
               "WANDB_CONFIG_DIR": str(tmp / "wandb_home"), "WANDB_DATA_DIR": str(tmp / "wandb_home"), **env}
    proc = subprocess.run([sys.executable, "train.py", *args], cwd=REPO, env=environ, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def _single_process_rows(run: Path, data: Path):
    """The run's own endpoints swept again in this one process, over the full (unsharded) sets."""
    from tests.conftest import tiny_cfg
    from wiseft.config.schema import to_settings
    from wiseft.data.datamodule import WiSEFTDataModule
    from wiseft.io.checkpoints import load_weights
    from wiseft.models.classifier import ClassificationHead, ImageClassifier
    from wiseft.models.factory import build_clip
    from wiseft.sweep.engine import run_sweep
    from wiseft.sweep.summary import Columns

    theta_0, meta = load_weights(run / "checkpoints" / "zeroshot.safetensors")
    theta_1, _ = load_weights(run / "checkpoints" / "finetuned.safetensors")
    bundle = build_clip(meta["model"]["name"])
    model = ImageClassifier(bundle.model.visual, ClassificationHead(torch.zeros_like(theta_0["head.weight"])))
    dm = WiSEFTDataModule(to_settings(tiny_cfg(data, run, ["data.eval_batch_size=1"])).data)
    dm.check()
    dm.set_transforms(bundle.eval_transform, bundle.eval_transform)
    sets = dm.eval_sets
    columns = Columns(sets[0].name, sets[1].name, tuple(s.name for s in sets[2:]))
    rows = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    expected = run_sweep(model, theta_0, theta_1, [r["alpha"] for r in rows],
                         {s.name: dm.eval_loader(s) for s in sets}, columns)
    return rows, expected, theta_0, theta_1


@pytest.mark.parametrize("mode", ["e2e", "linear"])
def test_two_processes_train_and_evaluate_exactly_like_one(tmp_path, mode):
    data = make_data(tmp_path)
    run = tmp_path / "run"
    # Evaluation batches of one image: each image's logits are then computed identically whatever the sharding,
    # so any difference from the single-process numbers could only come from padded, repeated or lost samples.
    extra = ["data.eval_batch_size=1", "wiseft.alphas=[0.0,0.5,1.0]", f"hydra.run.dir={run}"]
    if mode == "linear":
        extra += ["finetune=linear", f"finetune.feature_cache={tmp_path / 'features'}", "finetune.lr=3.0",
                  "finetune.epochs=2"]
    _run(_overrides(data, *extra), tmp_path)

    rows, expected, theta_0, theta_1 = _single_process_rows(run, data)
    assert rows == expected  # exact: the same integer counts
    summary = json.loads((run / "summary.json").read_text())
    # Odd-sized sets (9 and 9 and 9 and 6 images over 2 processes): every image counted once.
    assert summary["num_examples"] == {"reference_val": 9, "reference": 9, "shift_full": 9, "shift_sub": 6}
    assert not torch.equal(theta_0["head.weight"], theta_1["head.weight"])  # training ran
    # Outputs written once, by rank 0: no second Hydra folder, log, results or logger version.
    files = _files(run)
    assert not [f for f in files if "ddp_process" in f]
    # The end-of-training checkpoint (to resume a run killed during the sweep) and each process's record of
    # the evaluation sets it finished (the LC sweep interpolates cached logits: nothing to record).
    reliability = {"checkpoints/lightning/last.ckpt"}
    if mode == "e2e":
        reliability |= {"sweep_progress.rank0.jsonl", "sweep_progress.rank1.jsonl"}
    assert {f for f in files if not f.startswith((".hydra/", "csv/"))} == {
        ".ddp/config.yaml", "config.yaml", "train.log", "results.csv", "results.jsonl", "summary.json", "curve.png",
        "checkpoints/zeroshot.safetensors", "checkpoints/finetuned.safetensors",
        "checkpoints/wiseft_chosen.safetensors", *reliability}
    assert {Path(f).parts[1] for f in files if f.startswith("csv/")} == {"version_0"}
    assert not (tmp_path / "logs").exists()  # no stray run folder from a re-resolved ${now:}
    if mode == "linear":
        assert len(list((tmp_path / "features").glob("*.safetensors"))) == 5  # assembled shards, no parts left


def _check_multirun(sweep: Path, tmp: Path, wandb: bool) -> None:
    assert sorted(p.name for p in sweep.iterdir() if not p.name.startswith(".")) == ["0", "1", "multirun.yaml"]
    lrs = []
    for job in ("0", "1"):
        folder = sweep / job
        assert (folder / "summary.json").is_file()
        assert not [f for f in _files(folder) if "ddp_process" in f]
        assert len((folder / "results.jsonl").read_text().splitlines()) == 2
        lrs.append((folder / ".hydra" / "overrides.yaml").read_text())
        if wandb:
            runs = list((folder / "wandb").glob("offline-run-*"))
            assert len(runs) == 1, runs  # one W&B run per job, not one per rank nor one for all jobs
            assert len(list(runs[0].rglob("sweep_*.table.json"))) == 1
    assert "finetune.lr=0.001" in lrs[0] and "finetune.lr=0.0001" in lrs[1]
    assert not (tmp / "logs").exists()


def test_multirun_with_ddp_one_folder_and_one_wandb_run_per_job(tmp_path):
    data = make_data(tmp_path)
    sweep = tmp_path / "sweep"
    args = _overrides(data, "logger=wandb", "wiseft.alphas=[0.0,1.0]", f"hydra.sweep.dir={sweep}",
                      "finetune.lr=1e-3,1e-4")
    _run(["-m", *args], tmp_path)
    _check_multirun(sweep, tmp_path, wandb=True)


def test_submitit_local_multirun_of_two_ddp_jobs(tmp_path):
    plugin = pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    pytest.importorskip("submitit")
    data = make_data(tmp_path)
    sweep = tmp_path / "sweep"
    # The plugin may live outside the venv (PYTHONPATH); the jobs' interpreters must find it too.
    site = str(Path(plugin.__file__).resolve().parents[2])
    pythonpath = os.pathsep.join(p for p in (site, os.environ.get("PYTHONPATH")) if p)
    args = _overrides(data, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10",
                      "wiseft.alphas=[0.0,1.0]", f"hydra.sweep.dir={sweep}", "finetune.lr=1e-3,1e-4")
    _run(["-m", *args], tmp_path, PYTHONPATH=pythonpath)
    _check_multirun(sweep, tmp_path, wandb=False)
    assert len([p for p in (sweep / ".submitit").iterdir() if p.name != "%j"]) == 2
