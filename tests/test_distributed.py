"""Exact sharded evaluation and the DDP child launcher, in one process."""

import os
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.data import DistributedSampler

from wiseft.runtime.distributed import UnpaddedDistributedSampler, shard_indices
from wiseft.runtime.launch import CHILD_CONFIG, JobConfigLauncher, child_command, distributed_job, install_job_launcher


@pytest.mark.parametrize(("size", "world"), [(9, 2), (10, 3), (2, 4), (0, 2)])
def test_shards_are_disjoint_unpadded_and_cover_everything(size, world):
    shards = [list(shard_indices(size, r, world)) for r in range(world)]
    flat = sorted(i for s in shards for i in s)
    assert flat == list(range(size))  # every index exactly once: no padding, no repeat, no loss
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    samplers = [UnpaddedDistributedSampler(range(size), world, r) for r in range(world)]
    assert [list(s) for s in samplers] == shards
    assert [len(s) for s in samplers] == [len(s) for s in shards]


def test_lightning_keeps_the_unpadded_sampler():
    # Lightning replaces a DataLoader's sampler by its padded DistributedSampler unless it already is one.
    assert isinstance(UnpaddedDistributedSampler(range(5), 2, 0), DistributedSampler)
    # For contrast: torch's sampler pads 9 samples to 10 on 2 processes.
    assert sum(len(DistributedSampler(range(9), 2, r, shuffle=False)) for r in range(2)) == 10


def test_bad_rank_is_rejected():
    with pytest.raises(ValueError, match="rank 2 is outside"):
        shard_indices(5, 2, 2)


def test_ddp_children_run_the_resolved_job_config(tmp_path, monkeypatch):
    """Children start from the job's resolved config (not sys.argv), with their ranks; env is restored after."""
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("MASTER_PORT", "29999")
    cfg = OmegaConf.create({"a": 1, "b": "${a}", "paths": {"output_dir": str(tmp_path)}})
    trainer = L.Trainer(strategy="ddp", accelerator="cpu", devices=3, logger=False, enable_progress_bar=False,
                        enable_checkpointing=False, enable_model_summary=False)
    started = []

    class FakeProc:
        pid = 0

        def wait(self, timeout=None):
            return 0

    def fake_popen(command, env=None, **kwargs):
        started.append((command, env))
        return FakeProc()

    monkeypatch.setattr("wiseft.runtime.launch.subprocess.Popen", fake_popen)
    with distributed_job(trainer, cfg, tmp_path):
        launcher = trainer.strategy.launcher
        assert isinstance(launcher, JobConfigLauncher)
        launcher._call_children_scripts()
        assert os.environ["LOCAL_RANK"] == "0" and os.environ["WORLD_SIZE"] == "3"
    assert [c for c, _ in started] == [child_command(tmp_path / CHILD_CONFIG)] * 2
    assert started[0][0][:3] == [sys.executable, "-m", "wiseft.pipeline.ddp_child"]
    assert [(e["LOCAL_RANK"], e["RANK"]) for _, e in started] == [("1", "1"), ("2", "2")]
    package_root = str(Path(__file__).resolve().parents[1])
    assert started[0][1]["PYTHONPATH"].split(os.pathsep)[0] == package_root
    written = OmegaConf.load(tmp_path / CHILD_CONFIG)
    assert written.b == 1  # resolved: children never re-resolve anything
    # The next job of a multirun in this process must launch its own ranks again.
    assert "LOCAL_RANK" not in os.environ and "WORLD_SIZE" not in os.environ
    assert os.environ["MASTER_PORT"] == "29999"


def test_single_device_launcher_is_left_alone(tmp_path):
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_checkpointing=False, enable_model_summary=False)
    assert not install_job_launcher(trainer, OmegaConf.create({}), tmp_path)


def test_counts_summed_over_shards_equal_one_process(tiny_eval_setup):
    """What each DDP rank computes, summed, equals the single-process statistics (odd-sized sets), for WiSE-FT and
    the output-space ensemble: top-1 counts exactly; NLL and ECE to float rounding, since a forward pass over a
    batch of another size may round a logit differently in its last bit."""
    from wiseft.sweep.engine import WeightPath, sweep_stats
    from wiseft.sweep.stats import ece, nll

    model, theta_0, theta_1, datamodule = tiny_eval_setup
    grid = [0.0, 0.5, 1.0]
    sets = datamodule.eval_sets
    assert any(len(s.dataset) % 2 for s in sets)
    paths = [WeightPath("wiseft", theta_0, theta_1)]
    whole = sweep_stats(model, paths, grid, [datamodule.eval_loader(s) for s in sets], ensemble=True)
    parts = [sweep_stats(model, paths, grid, [datamodule.eval_loader(s, (r, 2)) for s in sets], ensemble=True)
             for r in range(2)]
    summed = parts[0] + parts[1]
    assert torch.equal(summed[..., :2], whole[..., :2])
    assert torch.allclose(ece(summed), ece(whole), rtol=0, atol=1e-4)  # percent
    assert torch.allclose(nll(summed), nll(whole), rtol=1e-7, atol=0)
    assert whole[0, 0, :, 1].tolist() == [len(s.dataset) for s in sets]


@pytest.fixture
def tiny_eval_setup(tmp_path):
    from tests.sweep_helpers import tiny_eval_setup

    return tiny_eval_setup(tmp_path)
