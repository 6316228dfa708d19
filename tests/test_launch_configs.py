"""The distributed configs compose into what Lightning and SLURM need."""

import pytest
from hydra import compose, initialize_config_dir

from tests.conftest import CONF_DIR

BASE = ["model=tiny_random", "data=imagefolder", "~experiment"]


def _compose(overrides):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=[*BASE, *overrides], return_hydra_config=True)


def test_ddp_trainer_config():
    cfg = _compose(["trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"])
    assert (cfg.trainer.strategy, cfg.trainer.devices, cfg.trainer.num_nodes) == ("ddp", 4, 2)
    assert cfg.trainer._target_ == "lightning.Trainer"


def test_slurm_launcher_requests_one_task_per_device_on_every_node():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    slurm = pytest.importorskip("submitit.slurm.slurm")
    cfg = _compose(["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=3",
                    "hydra.launcher.partition=gpu"])
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (3, 4, 4)
    # The sbatch script submitit would submit for these settings (rendered without a cluster).
    rename = slurm.SlurmExecutor._equivalence_dict()
    params = {rename.get(k, k): launcher[k] for k in ("nodes", "tasks_per_node", "gpus_per_node", "cpus_per_task",
                                                      "timeout_min", "partition")}
    script = slurm._make_sbatch_string(command="python -u -m submitit.core._submit X", folder="/tmp/x", **params)
    for line in ("#SBATCH --nodes=3", "#SBATCH --ntasks-per-node=4", "#SBATCH --gpus-per-node=4",
                 "#SBATCH --partition=gpu"):
        assert line in script
