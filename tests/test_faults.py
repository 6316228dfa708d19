"""Faults: a crashed run resumes bit for bit, the sweep resumes, writes are atomic, a non-finite loss stops the run,
W&B trouble never fails it, and SIGKILL/SIGTERM of a real ``python train.py`` are survived."""

from __future__ import annotations

import ast
import json
import logging
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import tiny_cfg
from tests.reliability_helpers import (
    REPO,
    RESUMABLE,
    assert_nothing_half_written,
    cli_args,
    cli_env,
    files_under,
    make_data,
    run_cli,
    same_weights,
)
from wiseft.errors import TrainingError
from wiseft.io.atomic import atomic_write, atomic_write_text
from wiseft.models.module import WiSEFTModule
from wiseft.pipeline.train import train
from wiseft.runtime.exact_resume import StepSeed

FINETUNED = Path("checkpoints") / "finetuned.safetensors"
LAST = Path("checkpoints") / "lightning" / "last.ckpt"
STEPS_PER_EPOCH = 6  # 24 training images, batches of 4


class Crash(Exception):
    """Stands for the process dying: raised from inside training, nothing handles it."""


def crash_at_step(monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    original = StepSeed.on_train_batch_start

    def crashing(self, trainer, *args):
        if trainer.global_step == step:
            raise Crash(f"crash at step {step}")
        return original(self, trainer, *args)

    monkeypatch.setattr(StepSeed, "on_train_batch_start", crashing)


def count_calls(monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> list[int]:
    calls: list[int] = []
    original = getattr(owner, name)

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Data, an uninterrupted reference run, and a copy of the same run that crashed in the middle of epoch 2."""
    root = tmp_path_factory.mktemp("faults")
    data = make_data(root)
    reference = root / "reference"
    train(tiny_cfg(data, reference, RESUMABLE))
    crashed = root / "crashed"
    with pytest.MonkeyPatch.context() as mp:
        crash_at_step(mp, 9)
        with pytest.raises(Crash):
            train(tiny_cfg(data, crashed, [*RESUMABLE, "data.num_workers=1"]))
    return data, reference, crashed


def test_crashed_run_left_a_mid_epoch_checkpoint_and_no_results(world):
    _, _, crashed = world
    ckpt = torch.load(crashed / LAST, weights_only=True)
    assert ckpt["global_step"] == 8 and ckpt["global_step"] % STEPS_PER_EPOCH != 0  # epoch 2, after its 2nd batch
    assert ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 1, "batches": 2}]
    assert not (crashed / "summary.json").exists() and not (crashed / "results.jsonl").exists()
    assert_nothing_half_written(crashed)


def test_relaunch_into_the_run_folder_resumes_mid_epoch_bit_exact(world, tmp_path, monkeypatch):
    data, reference, crashed = world
    run = tmp_path / "run"
    shutil.copytree(crashed, run)
    steps = count_calls(monkeypatch, WiSEFTModule, "training_step")
    # Same config as the crashed launch except the worker count (it does not change what is drawn).
    train(tiny_cfg(data, run, [*RESUMABLE, "data.num_workers=1"]))
    assert len(steps) == 2 * STEPS_PER_EPOCH - 8  # only the steps after the checkpoint were trained
    assert same_weights(run / FINETUNED, reference / FINETUNED)
    assert (run / "results.jsonl").read_text() == (reference / "results.jsonl").read_text()
    assert_nothing_half_written(run)


def test_resume_with_ckpt_path_into_a_new_folder_interpolates_from_true_zeroshot(world, tmp_path):
    data, reference, crashed = world
    out = tmp_path / "new"
    train(tiny_cfg(data, out, [*RESUMABLE, f"ckpt_path={crashed / LAST}"]))
    # The zero-shot snapshot is taken before Lightning restores the checkpoint, not from the restored weights.
    zeroshot = Path("checkpoints") / "zeroshot.safetensors"
    assert same_weights(out / zeroshot, reference / zeroshot)
    assert same_weights(out / FINETUNED, reference / FINETUNED)
    assert (out / "results.jsonl").read_text() == (reference / "results.jsonl").read_text()


def _one_batch_blocks(monkeypatch: pytest.MonkeyPatch, crash_after_sets: int | None = None) -> list[str]:
    """Evaluate every batch as its own block (sets finish one by one, as on real data); optionally crash once
    ``crash_after_sets`` sets have been recorded. Returns the names recorded, in order."""
    import wiseft.sweep.callback as sweep_module

    original = sweep_module.sweep_stats
    recorded: list[str] = []

    def small_blocks(*args, on_dataset=None, **kwargs):
        def record(j, counts):
            on_dataset(j, counts)
            recorded.append(j)
            if crash_after_sets is not None and len(recorded) == crash_after_sets:
                raise Crash("crash during the sweep")

        return original(*args, **{**kwargs, "cache_bytes": 1}, on_dataset=record)

    monkeypatch.setattr(sweep_module, "sweep_stats", small_blocks)
    return recorded


def test_sweep_resumes_without_reevaluating_finished_sets(world, tmp_path, monkeypatch):
    from wiseft.data.datasets import LabeledImageDataset

    data, reference, _ = world
    run = tmp_path / "run"
    _one_batch_blocks(monkeypatch, crash_after_sets=2)
    with pytest.raises(Crash):
        train(tiny_cfg(data, run, RESUMABLE))
    progress = [json.loads(line) for line in (run / "sweep_progress.jsonl").read_text().splitlines()]
    assert [p["dataset"] for p in progress] == ["reference_val", "reference"]
    # Statistics of both methods (WiSE-FT, output ensemble) at each of the 3 alphas.
    assert all(len(p["counts"]) == 2 and all(len(m) == 3 for m in p["counts"]) for p in progress)
    assert not (run / "summary.json").exists()
    assert_nothing_half_written(run)

    monkeypatch.undo()
    decoded = count_calls(monkeypatch, LabeledImageDataset, "load_image")
    steps = count_calls(monkeypatch, WiSEFTModule, "training_step")
    train(tiny_cfg(data, run, RESUMABLE))
    assert len(steps) == 0  # training had finished: the end-of-training checkpoint is resumed, nothing retrained
    assert len(decoded) == 6 + 4  # only the two unfinished sets (shift_full, shift_sub) are decoded again
    assert (run / "results.jsonl").read_text() == (reference / "results.jsonl").read_text()
    assert json.loads((run / "summary.json").read_text()) == json.loads((reference / "summary.json").read_text())


def test_sigterm_during_the_sweep_stops_it_and_the_relaunch_finishes(world, tmp_path, monkeypatch):
    from wiseft.errors import RunInterrupted
    from wiseft.sweep.callback import WiSEFTSweep

    data, reference, _ = world
    run = tmp_path / "run"
    original = WiSEFTSweep.on_fit_end
    recorded = _one_batch_blocks(monkeypatch)

    def signalled(self, trainer, pl_module):
        trainer._signal_connector.received_sigterm = True  # what Lightning's SIGTERM handler sets
        return original(self, trainer, pl_module)

    monkeypatch.setattr(WiSEFTSweep, "on_fit_end", signalled)
    with pytest.raises(RunInterrupted) as info:
        train(tiny_cfg(data, run, RESUMABLE))
    assert str(info.value) == (f"stopped by SIGTERM, checkpoint saved to '{run / LAST}'; relaunch with "
                               f"hydra.run.dir={run} to resume")
    assert recorded == [] and not (run / "summary.json").exists()  # stopped at the first batch
    assert_nothing_half_written(run)
    monkeypatch.undo()
    train(tiny_cfg(data, run, RESUMABLE))
    assert (run / "results.jsonl").read_text() == (reference / "results.jsonl").read_text()


def test_non_finite_loss_names_the_step_and_keeps_the_last_checkpoint(world, tmp_path):
    data, _, _ = world
    out = tmp_path / "run"
    # A learning rate this large turns the weights huge after one step; the next loss is NaN.
    extra = ["finetune.lr=1e20", "callbacks=model_checkpoint", "callbacks.model_checkpoint.every_n_train_steps=1"]
    with pytest.raises(TrainingError) as info:
        train(tiny_cfg(data, out, extra))
    assert str(info.value) == (
        f"non-finite loss (nan) at step 1 (epoch 0, batch 1); training stopped, the last checkpoint, from before this "
        f"step, is kept at '{out / LAST}' (lower finetune.lr or check the data)")
    ckpt = torch.load(out / LAST, weights_only=True)
    assert ckpt["global_step"] == 1
    assert all(torch.isfinite(t).all() for t in ckpt["state_dict"].values() if t.is_floating_point())
    assert not (out / "summary.json").exists()
    assert_nothing_half_written(out)


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path):
    path = tmp_path / "results.json"
    atomic_write_text(path, '{"ok": 1}\n')

    def half_then_crash(tmp: Path) -> None:
        tmp.write_text('{"trunc')
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, half_then_crash)
    assert path.read_text() == '{"ok": 1}\n'
    assert files_under(tmp_path) == [path]


def test_atomic_write_gives_the_mode_a_plain_write_would(tmp_path):
    (tmp_path / "plain.txt").write_text("x")
    atomic_write_text(tmp_path / "atomic.txt", "x")
    mode = lambda name: (tmp_path / name).stat().st_mode & 0o777  # noqa: E731
    assert mode("atomic.txt") == mode("plain.txt")  # not the 0600 of a temporary file


def test_lightning_checkpoint_write_is_atomic(tmp_path):
    from wiseft.io.checkpoint_io import SafeCheckpointIO

    io, path = SafeCheckpointIO(), tmp_path / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "global_step": 1}, path)
    with pytest.raises(Exception):  # noqa: B017 (pickling a lambda fails halfway through torch.save)
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "bad": lambda: None}, path)
    assert torch.equal(io.load_checkpoint(path)["state_dict"]["w"], torch.ones(3))
    assert files_under(tmp_path) == [path]


_WRITERS = {"write_text", "write_bytes", "savefig", "save_file", "save", "dump", "to_csv"}
# Modules that write only inside a private staging folder which is renamed into place whole (atomic per folder).
_STAGED_FOLDER_WRITERS = {"wiseft/toy/world.py"}


def test_every_writer_in_the_package_writes_through_an_atomic_temp_path():
    """Static audit: each call that writes a file must write to the ``tmp`` path handed out by wiseft.io.atomic."""
    offenders = []
    for source in sorted((REPO / "wiseft").rglob("*.py")):
        relative = source.relative_to(REPO).as_posix()
        if relative == "wiseft/io/atomic.py" or relative in _STAGED_FOLDER_WRITERS:
            continue
        tree = ast.parse(source.read_text())
        in_memory = {"tmp"} | _names_bound_to_memory_buffers(tree)  # the atomic temp path, or no file at all
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            writes = name in _WRITERS or (name == "open" and any(
                isinstance(a, ast.Constant) and isinstance(a.value, str) and set(a.value) & {"w", "a", "x"}
                for a in [*node.args[1:], *(k.value for k in node.keywords if k.arg == "mode")]))
            safe = any(isinstance(n, ast.Name) and n.id in in_memory for a in node.args for n in ast.walk(a))
            if writes and not safe and not (name in {"save", "dump"} and not _serialises_to_a_file(node)):
                offenders.append(f"{source.relative_to(REPO)}:{node.lineno} {name}")
    assert offenders == []


def _serialises_to_a_file(node: ast.Call) -> bool:
    # torch.save / json.dump / pickle.dump / np.save write files; a method of ours named save (FeatureCache.save,
    # logger.save) is audited where it is defined.
    owner = node.func.value if isinstance(node.func, ast.Attribute) else None
    return isinstance(owner, ast.Name) and owner.id in {"torch", "json", "pickle", "yaml", "np", "numpy"}


def _names_bound_to_memory_buffers(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            func = node.value.func
            if (func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")) in {"BytesIO", "StringIO"}:
                names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return names


def test_wandb_without_key_falls_back_to_offline_and_the_run_completes(world, tmp_path, monkeypatch, caplog):
    data, _, _ = world
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.netrc, no stored key
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="wiseft.review.wandb"):
        train(tiny_cfg(data, out, ["logger=wandb", "logger.wandb.offline=false"]))
    assert "W&B could not start online (No API key configured" in caplog.text
    assert (out / "summary.json").is_file() and (out / "results.csv").is_file()
    assert list((out / "wandb").glob("offline-run-*"))


def test_wandb_service_down_or_failing_mid_run_never_raises(tmp_path, monkeypatch, caplog):
    import wandb
    from lightning.fabric.loggers.logger import _DummyExperiment

    from wiseft.review.wandb import ResilientWandbLogger

    def refuse(*args, **kwargs):
        raise wandb.errors.CommError("service unavailable")

    monkeypatch.setattr(wandb, "init", refuse)
    with caplog.at_level(logging.WARNING, logger="wiseft.review.wandb"):
        logger = ResilientWandbLogger(project="p", save_dir=str(tmp_path), offline=False)
        assert isinstance(logger.experiment, _DummyExperiment) and logger.disabled
        logger.log_hyperparams({"a": 1})
        logger.log_metrics({"m": 1.0}, step=0)
        logger.finalize("success")
    assert "retrying offline" in caplog.text and "continuing without W&B" in caplog.text

    class FlakyRun:
        def log(self, *args, **kwargs):
            raise ConnectionError("connection reset")

    healthy = ResilientWandbLogger(project="p", save_dir=str(tmp_path), offline=True)
    healthy._experiment = FlakyRun()
    healthy.log_metrics({"m": 1.0}, step=1)  # the error is reported, not raised
    assert healthy.disabled and "connection reset" in healthy._disabled_reason


# --- real processes: SIGKILL and SIGTERM of `python train.py` ------------------------------------------------------

KILL_EXTRA = ["callbacks=model_checkpoint", "callbacks.model_checkpoint.every_n_train_steps=5", "finetune.epochs=2",
              "data.batch_size=2", "wiseft.alphas=[0.0,0.5,1.0]"]
# 48 training images in batches of 2: no step checkpoint (every 5 steps) falls on an epoch end before step 120,
# and the signal is sent as soon as the first one (step 5) exists, 43 steps before training ends.
KILL_STEPS_PER_EPOCH = 24


@pytest.fixture(scope="module")
def kill_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("kill")
    data = make_data(root, train_per_class=16)
    reference = root / "reference"
    proc = run_cli(cli_args(data, reference, KILL_EXTRA))
    assert proc.returncode == 0, proc.stderr[-2000:]
    return data, reference


def _launch_and_signal(data: Path, out: Path, sig: int) -> tuple[subprocess.Popen, str]:
    """Start a CLI run, send ``sig`` as soon as its first step checkpoint exists, and wait for it to end."""
    proc = subprocess.Popen(cli_args(data, out, KILL_EXTRA), cwd=REPO, env=cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while not (out / LAST).exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(sig)
    output = proc.communicate(timeout=300)[0]
    return proc, output


@pytest.mark.slow
def test_sigkill_mid_epoch_then_relaunch_matches_the_uninterrupted_run(kill_world, tmp_path):
    data, reference = kill_world
    out = tmp_path / "run"
    proc, output = _launch_and_signal(data, out, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL, output[-2000:]
    step = torch.load(out / LAST, weights_only=True)["global_step"]
    assert step % KILL_STEPS_PER_EPOCH != 0, "the kill landed after the epoch: not a mid-epoch resume"
    assert not (out / "summary.json").exists()
    assert_nothing_half_written(out)
    resumed = run_cli(cli_args(data, out, KILL_EXTRA))  # the one command: relaunch into the same folder
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    # Lightning's INFO lines go to the run's log file, not the terminal.
    assert "Restoring states from the checkpoint path" in (out / "train.log").read_text()
    assert same_weights(out / FINETUNED, reference / FINETUNED)
    assert (out / "results.jsonl").read_text() == (reference / "results.jsonl").read_text()


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_exits_143_and_resumes_exactly(kill_world, tmp_path):
    data, reference = kill_world
    out = tmp_path / "run"
    proc, output = _launch_and_signal(data, out, signal.SIGTERM)
    assert proc.returncode == 128 + signal.SIGTERM, output[-2000:]
    assert re.search(rf"interrupted: stopped by SIGTERM, checkpoint saved to '{re.escape(str(out / LAST))}'; "
                     rf"relaunch with hydra.run.dir={re.escape(str(out))} to resume", output)
    assert re.search(r"SIGTERM: checkpoint saved to .*last\.ckpt \(step \d+\)", output)  # saved by the signal path
    assert_nothing_half_written(out)
    resumed = run_cli(cli_args(data, out, KILL_EXTRA))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert same_weights(out / FINETUNED, reference / FINETUNED)


@pytest.mark.slow
def test_ddp_run_killed_mid_epoch_resumes_exactly(kill_world, tmp_path):
    """Two DDP processes (gloo on CPU), every process of the job killed at once, then one relaunch."""
    import os

    data, _ = kill_world
    ddp = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]
    reference, out = tmp_path / "reference", tmp_path / "run"
    env = {"WISEFT_LOG_DIR": str(tmp_path / "logs")}
    done = run_cli(cli_args(data, reference, [*KILL_EXTRA, *ddp]), **env)
    assert done.returncode == 0, done.stderr[-2000:]
    proc = subprocess.Popen(cli_args(data, out, [*KILL_EXTRA, *ddp]), cwd=REPO, env=cli_env(**env),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while not (out / LAST).exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and its child rank, as a pre-emption would
    proc.wait()
    ckpt = torch.load(out / LAST, weights_only=True)
    assert ckpt["global_step"] % (KILL_STEPS_PER_EPOCH // 2) != 0  # mid-epoch (each process has half the data)
    resumed = run_cli(cli_args(data, out, [*KILL_EXTRA, *ddp]), **env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert same_weights(out / FINETUNED, reference / FINETUNED)
    assert (out / "results.jsonl").read_text() == (reference / "results.jsonl").read_text()
