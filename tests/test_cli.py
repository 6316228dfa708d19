"""`python train.py` as a user runs it: bad input fails fast with one line; multirun gives separate jobs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import make_tree

REPO = Path(__file__).resolve().parents[1]


def _tiny_args(data: Path) -> list[str]:
    return [
        "model=tiny_random", "data=imagefolder", f"paths.data_dir={data}", "~experiment", "callbacks=none",
        "finetune.epochs=1", "finetune.warmup_steps=1", "data.batch_size=8", "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "wiseft.alphas=[0.0,0.5,1.0]",
        f"+data.shifts.shift={{root:{data}/shift_sub}}",
    ]


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli") / "data"
    make_tree(root / "reference" / "train", per_class=6, seed=1)
    make_tree(root / "reference" / "val", per_class=2, seed=2)
    make_tree(root / "reference" / "test", per_class=2, seed=3)
    make_tree(root / "shift_sub", classes=("blue", "red"), per_class=2, seed=5)
    return root


@pytest.mark.parametrize("override,message", [
    ("wiseft.alphas=[0.0,1.5]", "error: wiseft.alphas: alpha 1.5 is outside [0, 1]"),
    ("wiseft.alphas=[]", "error: wiseft.alphas: the alpha grid is empty"),
    ("model.name=ViT-Q-99", "error: model.name: unknown open_clip model 'ViT-Q-99'"),
    ("data.reference.train.kind=imagenet9k", "error: data.reference.train.kind: unknown dataset kind 'imagenet9k'"),
    ("data.templates=klingon", "error: data.templates: unknown template set 'klingon'"),
])
def test_bad_config_fails_at_start_with_one_line(tmp_path, data, override, message):
    out = tmp_path / "run"
    result = _run([*_tiny_args(data), override, f"hydra.run.dir={out}"], tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith(message), result.stderr[-2000:]
    assert not (out / "results.csv").exists() and not (out / "checkpoints").exists()


def test_missing_data_folder_names_it(tmp_path, data):
    missing = tmp_path / "nowhere"
    result = _run([*_tiny_args(data), f"data.reference.test.root={missing}", f"hydra.run.dir={tmp_path / 'run'}"],
                  tmp_path)
    assert result.returncode == 2
    expected = f"error: data.reference.test: dataset folder '{missing}' does not exist"
    assert result.stderr.strip().splitlines()[-1] == expected


def test_multirun_gives_one_folder_and_one_wandb_run_per_job_and_method(tmp_path, data):
    sweep_dir = tmp_path / "sweep"
    result = _run(["-m", *_tiny_args(data), "finetune.lr=1e-5,3e-5", "logger=wandb", f"hydra.sweep.dir={sweep_dir}"],
                  tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted(p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit())
    assert [j.name for j in jobs] == ["0", "1"]
    run_ids = set()
    for job, lr in zip(jobs, (1e-5, 3e-5), strict=True):
        summary = json.loads((job / "summary.json").read_text())
        assert 0.0 <= summary["chosen"]["avg_ref_shifts"] <= 100.0
        assert (job / ".hydra" / "overrides.yaml").read_text().count(f"finetune.lr={lr:g}") == 1
        runs = list((job / "wandb").glob("offline-run-*"))
        assert len(runs) == 2, runs  # the job's run (WiSE-FT) and its output-space ensemble's
        run_ids |= {run.name.rsplit("-", 1)[-1] for run in runs}
    assert len(run_ids) == 4
