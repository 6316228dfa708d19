"""Helpers shared by the reliability tests: run folders, half-written-file checks, CLI runs of ``train.py``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from tests.conftest import make_tree
from wiseft.io.checkpoints import load_weights

REPO = Path(__file__).resolve().parents[1]

#: What resume tests add to ``tiny_cfg``: two epochs of several steps and a step checkpoint every 2 steps.
RESUMABLE = ["finetune.epochs=2", "data.batch_size=4", "callbacks=model_checkpoint",
             "callbacks.model_checkpoint.every_n_train_steps=2", "wiseft.alphas=[0.0,0.5,1.0]"]


def make_data(root: Path, train_per_class: int = 8) -> Path:
    """Reference train/val/test and one shift set, small enough for a seconds-long run."""
    data = root / "data"
    make_tree(data / "reference" / "train", per_class=train_per_class, seed=1)
    make_tree(data / "reference" / "val", per_class=2, seed=2)
    make_tree(data / "reference" / "test", per_class=2, seed=3)
    make_tree(data / "shift_full", per_class=2, seed=4)
    make_tree(data / "shift_sub", classes=("blue", "red"), per_class=2, seed=5)
    return data


def files_under(folder: Path) -> list[Path]:
    """Every file under ``folder`` (none if it does not exist)."""
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def assert_nothing_half_written(folder: Path) -> None:
    """No temporary file of an atomic write is left, and every result file present parses completely."""
    import json

    from omegaconf import OmegaConf

    leftovers = [p for p in files_under(folder) if p.name.endswith(".tmp")]
    assert not leftovers, leftovers
    for path in files_under(folder):
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".jsonl":
            for line in path.read_text().splitlines():
                json.loads(line)
        elif path.suffix == ".yaml":
            OmegaConf.load(path)
        elif path.suffix == ".safetensors":
            load_weights(path)
        elif path.suffix == ".ckpt":
            torch.load(path, weights_only=True, map_location="cpu")


def same_weights(a: Path, b: Path) -> bool:
    """Whether two safetensors checkpoints hold bit-identical tensors."""
    sa, sb = load_weights(a)[0], load_weights(b)[0]
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def cli_args(data: Path, out: Path, extra: list[str] | None = None) -> list[str]:
    """``python train.py`` arguments equivalent to ``tiny_cfg`` (output folder via ``hydra.run.dir``)."""
    return [
        sys.executable, "train.py", "model=tiny_random", "data=imagefolder", f"paths.data_dir={data}", "~experiment",
        "logger=csv", "callbacks=none", "finetune.epochs=1", "finetune.warmup_steps=1", "finetune.lr=1e-3",
        "data.batch_size=8", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false", f"+data.shifts.shift_full={{root:{data}/shift_full}}",
        f"hydra.run.dir={out}", *(extra or []),
    ]


def cli_env(**extra: str) -> dict[str, str]:
    """Environment of CLI runs: one intra-op thread (bit-identical results across processes), repo on the path."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **extra}


def run_cli(args: list[str], timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    """Run ``python train.py`` to completion in the repository root."""
    return subprocess.run(args, cwd=REPO, env=cli_env(**env), capture_output=True, text=True, timeout=timeout)


def error_line(proc: subprocess.CompletedProcess) -> str:
    """The ``error: ...`` line a failed CLI run printed (asserting there is exactly one)."""
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, proc.stderr[-2000:]
    return lines[0]
