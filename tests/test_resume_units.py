"""Pure pieces of resuming: seeds, the epoch sampler, checkpoint selection, config comparison, error lines."""

from __future__ import annotations

import os

import pytest
import torch

from wiseft.errors import CheckpointError, DataError, one_line
from wiseft.io.atomic import check_creatable
from wiseft.runtime.exact_resume import EpochSampler, ResumableLoader, SeededSamples, mix_seed
from wiseft.runtime.resume import config_difference, select_resume_checkpoint


def test_mix_seed_is_stable_and_spread():
    assert mix_seed(0, 1, 2) == mix_seed(0, 1, 2)
    seeds = {mix_seed(0, epoch, index) for epoch in range(4) for index in range(256)}
    assert len(seeds) == 4 * 256 and all(0 <= s < 2**63 for s in seeds)


def test_sampler_order_is_a_function_of_seed_and_epoch_and_resumes_after_skipped_samples():
    epoch = [0]
    sampler = EpochSampler(10, seed=3, epoch_fn=lambda: epoch[0])
    first = list(sampler)
    assert sorted(i for i, _ in first) == list(range(10)) and list(sampler) == first
    epoch[0] = 1
    second = list(sampler)
    assert [i for i, _ in second] != [i for i, _ in first]
    sampler.resume_at(1, 4)
    assert list(sampler) == second[4:]  # the resumed iteration continues where the checkpoint stopped
    assert list(sampler) == second  # and only that one


def test_seeded_samples_make_augmentation_independent_of_what_ran_before():
    class Noisy(torch.utils.data.Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, index):
            return torch.rand(2)

    wrapped = SeededSamples(Noisy())
    a = wrapped[(1, 42)]
    torch.rand(100)  # consume the global stream
    assert torch.equal(wrapped[(1, 42)], a) and not torch.equal(wrapped[(1, 43)], a)
    state = torch.get_rng_state()
    wrapped[(2, 7)]
    assert torch.equal(torch.get_rng_state(), state)  # the caller's stream is untouched


def test_loader_state_moves_to_the_next_epoch_once_an_epoch_is_complete():
    data = torch.utils.data.TensorDataset(torch.arange(10.0))
    progress = [(0, 2)]
    loader = ResumableLoader(data, 4, 0, lambda: progress[0], lambda: 0)
    assert loader.state_dict() == {"epoch": 0, "batches": 2}
    progress[0] = (0, 3)  # 10 samples in batches of 4: 3 batches make the epoch
    assert loader.state_dict() == {"epoch": 1, "batches": 0}
    loader.load_state_dict({"epoch": 0, "batches": 2})
    order = EpochSampler(10, 0, lambda: 0).order(0)
    assert [b[0].tolist() for b in loader] == [[float(i) for i in order[8:]]]  # only the last, partial batch


def test_select_resume_checkpoint(tmp_path):
    ckpt_dir = tmp_path / "checkpoints" / "lightning"
    ckpt_dir.mkdir(parents=True)
    assert select_resume_checkpoint(None, True, tmp_path, [ckpt_dir]) is None
    last, hpc = ckpt_dir / "last.ckpt", tmp_path / "hpc_ckpt_3.ckpt"
    last.write_bytes(b"x")
    hpc.write_bytes(b"x")
    os.utime(last, ns=(1, 1_000_000_000))
    os.utime(hpc, ns=(1, 2_000_000_000))
    assert select_resume_checkpoint(None, True, tmp_path, [ckpt_dir]) == hpc  # the newest wins
    assert select_resume_checkpoint(None, False, tmp_path, [ckpt_dir]) is None
    assert select_resume_checkpoint(str(last), False, tmp_path, [ckpt_dir]) == last
    with pytest.raises(CheckpointError, match=r"ckpt_path: checkpoint '.*missing\.ckpt' does not exist"):
        select_resume_checkpoint(str(tmp_path / "missing.ckpt"), True, tmp_path, [ckpt_dir])


def test_config_difference_ignores_what_does_not_change_the_weights():
    base = {"seed": 0, "finetune": {"lr": 1e-3}, "data": {"num_workers": 0, "batch_size": 8}, "wiseft": {"a": 1}}
    assert config_difference(base, {**base, "data": {"num_workers": 4, "batch_size": 8}, "wiseft": {"a": 2}}) is None
    assert config_difference(base, {**base, "seed": 1}) == ("seed", 0, 1)
    assert config_difference(base, {**base, "data": {"num_workers": 0, "batch_size": 16}}) == ("data.batch_size", 8, 16)


def test_sweep_engine_reports_each_finished_set_and_skips_done_ones():
    from wiseft.sweep.engine import WeightPath, sweep_stats

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    theta_0 = {k: v.clone() for k, v in model.state_dict().items()}
    theta_1 = {k: torch.randn_like(v) for k, v in theta_0.items()}
    sets = [[(torch.randn(5, 4), torch.randint(0, 3, (5,))) for _ in range(3)] for _ in range(3)]
    grid = [0.0, 0.5, 1.0]
    paths = [WeightPath("wiseft", theta_0, theta_1)]
    full = sweep_stats(model, paths, grid, sets, ensemble=True, cache_bytes=1 << 20)
    reported = {}
    sweep_stats(model, paths, grid, sets, ensemble=True, cache_bytes=100,
                on_dataset=lambda j, c: reported.setdefault(j, c))
    assert list(reported) == [0, 1, 2] and all(torch.equal(reported[j], full[:, :, j]) for j in range(3))

    class Unreadable:
        def __iter__(self):
            raise AssertionError("a finished set was read again")

    resumed = sweep_stats(model, paths, grid, [Unreadable(), sets[1], sets[2]], ensemble=True,
                          done={0: full[:, :, 0]})
    assert torch.equal(resumed, full)


def test_check_creatable_creates_nothing(tmp_path):
    target = tmp_path / "a" / "b"
    assert check_creatable(target) == target and not (tmp_path / "a").exists()
    (tmp_path / "file").write_text("")
    with pytest.raises(PermissionError, match=r"'.*file' is not a folder"):
        check_creatable(tmp_path / "file" / "x")


def test_one_line_of_a_worker_error():
    wrapped = DataError("Caught DataError in DataLoader worker process 0.\nOriginal Traceback (most recent call "
                        "last):\n  File \"x.py\", line 1\nwiseft.errors.DataError: cannot read image 'a.png': bad\n")
    assert one_line(wrapped) == "cannot read image 'a.png': bad"
    assert one_line(DataError("plain")) == "plain"


def test_trainer_gets_the_safe_checkpoint_io_next_to_configured_plugins():
    from lightning.fabric.plugins.environments import LightningEnvironment

    from tests.conftest import compose_cfg
    from wiseft.io.checkpoint_io import SafeCheckpointIO
    from wiseft.pipeline.train import _trainer_plugins

    plugins = _trainer_plugins(compose_cfg(["model=tiny_random", "data=imagefolder"]))
    assert [type(p) for p in plugins] == [SafeCheckpointIO]
    env = "+trainer.plugins=[{_target_: lightning.pytorch.plugins.environments.LightningEnvironment}]"
    plugins = _trainer_plugins(compose_cfg(["model=tiny_random", "data=imagefolder", env]))
    assert [type(p) for p in plugins] == [LightningEnvironment, SafeCheckpointIO]
