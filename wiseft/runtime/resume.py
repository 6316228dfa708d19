"""Resuming a run: which checkpoint to start from, and whether a run folder may be continued with this config.

A run resumes with one command: relaunch it into its own folder (``hydra.run.dir=<run>``) and it continues
from the newest checkpoint there (``auto_resume``), or pass ``ckpt_path=<file>`` to start a new folder from a
checkpoint. A folder is only continued with the config it was started with (model, data, recipe and seed), so a
relaunch cannot silently mix two different trainings.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from wiseft.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)

CONFIG_YAML = "config.yaml"
LAST_CKPT = "last.ckpt"
#: Config sections that decide the fine-tuned weights: a folder is only resumed when they are unchanged.
RUN_DEFINING_KEYS = ("model", "data", "finetune", "seed")
#: Keys inside those sections that may change between launches without changing the weights.
RESUME_FREE_KEYS = ("data.num_workers", "data.eval_batch_size")


def resume_candidates(out_dir: str | Path, ckpt_dirs: Iterable[str | Path]) -> list[Path]:
    """Existing checkpoints a relaunch could continue from: ``last.ckpt`` of each checkpoint folder and
    Lightning's SLURM ``hpc_ckpt_*.ckpt`` in the run folder."""
    paths = [Path(d) / LAST_CKPT for d in ckpt_dirs]
    paths += sorted(Path(out_dir).glob("hpc_ckpt_*.ckpt"))
    seen: set[Path] = set()
    found = []
    for path in paths:
        if path.is_file() and path.resolve() not in seen:
            seen.add(path.resolve())
            found.append(path)
    return found


def select_resume_checkpoint(
    ckpt_path: str | None, auto_resume: bool, out_dir: str | Path, ckpt_dirs: Iterable[str | Path]
) -> Path | None:
    """The checkpoint to resume from: ``ckpt_path`` when given, else (with ``auto_resume``) the newest candidate.

    Raises:
        CheckpointError: ``ckpt_path`` does not exist.
    """
    if ckpt_path:
        path = Path(ckpt_path).expanduser()
        if not path.is_file():
            raise CheckpointError(f"ckpt_path: checkpoint '{path}' does not exist")
        return path
    if not auto_resume:
        return None
    candidates = resume_candidates(out_dir, ckpt_dirs)
    if not candidates:
        return None
    newest = max(candidates, key=lambda p: p.stat().st_mtime_ns)
    log.info("resuming from %s (auto_resume: the run folder already holds a checkpoint)", newest)
    return newest


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, Mapping):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out or {prefix: {}}
    return {prefix: node}


def config_difference(saved: Mapping[str, Any], current: Mapping[str, Any]) -> tuple[str, Any, Any] | None:
    """The first run-defining key whose value differs between two resolved configs, with both values."""
    old, new = _flatten({k: saved.get(k) for k in RUN_DEFINING_KEYS}), _flatten(
        {k: current.get(k) for k in RUN_DEFINING_KEYS})
    for key in sorted(set(old) | set(new)):
        if key in RESUME_FREE_KEYS or any(key.startswith(f"{free}.") for free in RESUME_FREE_KEYS):
            continue
        if old.get(key, "<missing>") != new.get(key, "<missing>"):
            return key, old.get(key, "<missing>"), new.get(key, "<missing>")
    return None


def check_same_run(out_dir: str | Path, current: Mapping[str, Any]) -> None:
    """Refuse to continue a run folder whose saved ``config.yaml`` defines a different training.

    Args:
        out_dir: The run folder.
        current: This launch's resolved (redacted) config as plain containers.

    Raises:
        ConfigError: Naming the first differing key and both values.
    """
    path = Path(out_dir) / CONFIG_YAML
    if not path.is_file():
        return
    saved = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    assert isinstance(saved, dict)
    diff = config_difference(saved, current)
    if diff is not None:
        key, old, new = diff
        raise ConfigError(f"{key}: the run folder '{out_dir}' was started with {old!r}, this launch has {new!r}; "
                          "resume with the same config or use a new folder (hydra.run.dir=...)")
