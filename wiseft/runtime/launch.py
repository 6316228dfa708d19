"""DDP under Hydra: extra processes re-run the job from its resolved config, not from the command line.

Lightning's subprocess launcher starts ranks 1..N-1 by re-running ``sys.argv`` with ``hydra.run.dir`` appended.
Under Hydra that breaks in known ways: in a multirun the children receive ``-m`` and every sweep value, so each
one starts a whole sweep of its own (duplicate output folders, extra W&B runs); under a submitit launcher the
main module is submitit's, not the script; and anything re-resolved in a child (``${now:...}``) can differ from
the parent. :class:`JobConfigLauncher` instead writes the job's fully resolved config once and starts every
child as ``python -m wiseft.pipeline.ddp_child <config>``, so all ranks run exactly the same job in the same folder.

:func:`distributed_job` also undoes what a DDP fit leaves in the process (the process group, ``LOCAL_RANK`` and
friends in ``os.environ``), so that the next job of a multirun in the same process starts clean.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher
from omegaconf import DictConfig, OmegaConf

import wiseft
from wiseft.config.secrets import redacted_config
from wiseft.io.atomic import atomic_write_text

log = logging.getLogger(__name__)

#: Where the resolved config of a job's child processes is written, inside the run folder.
CHILD_CONFIG = ".ddp/config.yaml"

#: Environment variables Lightning's launcher sets in the main process; a later job must not inherit them.
DDP_ENV_KEYS = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", "RANK")


def child_command(config_path: str | Path) -> list[str]:
    """The command line of one child process: this interpreter, this module, the job's config."""
    return [sys.executable, "-m", "wiseft.pipeline.ddp_child", str(config_path)]


def child_env(base: dict[str, str], local_rank: int, node_rank: int, num_processes: int) -> dict[str, str]:
    """Environment of child ``local_rank``: Lightning's variables plus the package on ``PYTHONPATH``."""
    env = dict(base)
    env["LOCAL_RANK"] = str(local_rank)
    # The global rank, so that code running before the Trainer exists can tell rank 0 on every node.
    env["RANK"] = str(node_rank * num_processes + local_rank)
    if base.get("PL_GLOBAL_SEED") is None:
        env.pop("PL_GLOBAL_SEED", None)
    package_root = str(Path(wiseft.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, base.get("PYTHONPATH")) if p)
    return env


class JobConfigLauncher(_SubprocessScriptLauncher):
    """Lightning's subprocess launcher, with children started from a config file instead of ``sys.argv``."""

    def __init__(self, base: _SubprocessScriptLauncher, config: DictConfig, output_dir: str | Path) -> None:
        """Args:
        base: The launcher Lightning configured (its cluster environment and process counts are kept).
        config: The job's composed config; written resolved for the children.
        output_dir: The run folder.
        """
        super().__init__(base.cluster_environment, base.num_processes, base.num_nodes)
        self.config = config
        self.config_path = Path(output_dir) / CHILD_CONFIG

    def _call_children_scripts(self) -> None:
        self._check_can_spawn_children()
        self.procs = []
        env = self.cluster_environment
        os.environ["MASTER_ADDR"] = env.main_address
        os.environ["MASTER_PORT"] = str(env.main_port)
        os.environ["NODE_RANK"] = str(env.node_rank())
        os.environ["LOCAL_RANK"] = str(env.local_rank())
        os.environ["WORLD_SIZE"] = str(self.num_processes * self.num_nodes)
        # Secrets stay out of the run folder; children inherit the environment they were resolved from.
        atomic_write_text(self.config_path, OmegaConf.to_yaml(OmegaConf.create(redacted_config(self.config))))
        for local_rank in range(1, self.num_processes):
            child = child_env(dict(os.environ), local_rank, env.node_rank(), self.num_processes)
            self.procs.append(subprocess.Popen(child_command(self.config_path), env=child))


def install_job_launcher(trainer: L.Trainer, config: DictConfig, output_dir: str | Path) -> bool:
    """Swap Lightning's subprocess launcher for :class:`JobConfigLauncher`; return whether it was swapped.

    Strategies without that launcher (single device, ``ddp_spawn``) are left alone. Where a cluster starts
    every process itself (SLURM, torchrun), the launcher is swapped too but, like Lightning's, starts none.
    """
    strategy = trainer.strategy
    launcher = getattr(strategy, "launcher", None)
    if type(launcher) is not _SubprocessScriptLauncher:
        return False
    strategy._launcher = JobConfigLauncher(launcher, config, output_dir)
    return True


@contextlib.contextmanager
def distributed_job(trainer: L.Trainer, config: DictConfig, output_dir: str | Path,
                    child_timeout_s: float = 600.0) -> Iterator[None]:
    """Run a fit with DDP children started from the job's config, and leave the process as it was found.

    On exit (normal or not): waits for the children, destroys the process group, and restores the
    environment variables the launcher set, so the next job of a sequential multirun launches its own ranks.
    """
    saved = {key: os.environ.get(key) for key in DDP_ENV_KEYS}
    install_job_launcher(trainer, config, output_dir)
    try:
        yield
    finally:
        launcher = getattr(trainer.strategy, "launcher", None)
        for proc in getattr(launcher, "procs", []):
            try:
                proc.wait(timeout=child_timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("DDP child %d still running after %.0f s; terminating it", proc.pid, child_timeout_s)
                proc.terminate()
        if isinstance(launcher, JobConfigLauncher):
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()
