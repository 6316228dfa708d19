"""The fine-tuned runs of a multirun, grouped for merging, and every check a merge needs before any work.

A run is a finished job folder (``summary.json``) with its ``checkpoints/{zeroshot,finetuned}.safetensors``.
Runs are merged together when they differ only in the ``vary`` keys (by default ``seed``): a multirun
``seed=0,1 finetune.lr=1e-5,3e-5`` gives two groups, one per learning rate, of two seeds each; ``vary=None``
(``--vary all``) merges every run of the multirun into one group, as the model-soups paper does across
hyperparameters. The keys compared are the hyperparameters that tell the jobs apart
(:func:`wiseft.review.multirun.job_params`: Hydra's sweep overrides, else the differing config values).

The checks read only checkpoint headers, metadata and the zero-shot tensors: every group must hold two runs or
more, of one architecture and one class list, fine-tuned from the same zero-shot weights.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from wiseft.errors import CheckpointError, ConfigError
from wiseft.io.checkpoints import FORMAT
from wiseft.pipeline.evaluate import _SAME_MODEL_KEYS
from wiseft.review.multirun import Job, format_value, load_sweep

FINETUNED = Path("checkpoints") / "finetuned.safetensors"
ZEROSHOT = Path("checkpoints") / "zeroshot.safetensors"
#: Relative tolerance on the zero-shot weights of runs merged together (bit-exact on one machine; a run made on
#: other hardware may differ in the last bits).
ZEROSHOT_RTOL = 1e-4


def read_metadata(path: Path) -> dict[str, Any]:
    """The metadata of a wiseft safetensors checkpoint, without reading its tensors.

    Raises:
        CheckpointError: Missing, unreadable, or not written by wiseft (names the file).
    """
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"checkpoint '{path}' is not a readable safetensors file ({err})") from err
    if raw.get("format") != FORMAT or "model" not in raw or "classnames" not in raw:
        raise CheckpointError(f"checkpoint '{path}' has no model and class metadata (not written by wiseft?)")
    return {k: (v if k == "format" else json.loads(v)) for k, v in raw.items()}


@dataclass
class Run:
    """One finished fine-tuning job of the multirun.

    Attributes:
        job: The job folder's results and config.
        meta: Its fine-tuned checkpoint's metadata (``model``, ``classnames``).
    """

    job: Job
    meta: dict[str, Any]

    @property
    def name(self) -> str:
        """The job folder, relative to the multirun folder."""
        return self.job.name

    @property
    def finetuned(self) -> Path:
        """The fine-tuned checkpoint."""
        return self.job.path / FINETUNED

    @property
    def zeroshot(self) -> Path:
        """The zero-shot checkpoint."""
        return self.job.path / ZEROSHOT

    @property
    def seed(self) -> int:
        """The job's seed (splits the held-out data when there is no validation set)."""
        return int(self.job.config.get("seed", 0))


@dataclass
class Group:
    """Runs merged together.

    Attributes:
        runs: Two or more runs, in the multirun's order.
        key: The hyperparameters the group's runs share and that tell it apart from the other groups.
    """

    runs: list[Run]
    key: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """``k=v, ...`` of the group's key (``all jobs`` for the one group of a multirun)."""
        return ", ".join(f"{k}={format_value(v)}" for k, v in self.key.items()) or "all jobs"


def find_runs(root: str | Path) -> list[Run]:
    """Every finished job under a multirun folder, with its checkpoints' metadata.

    Raises:
        DataError: No such folder, or no finished job in it.
        CheckpointError: A finished job without its zero-shot or fine-tuned checkpoint (names it).
    """
    runs = []
    for job in load_sweep(root).jobs:
        for file in (FINETUNED, ZEROSHOT):
            if not (job.path / file).is_file():
                raise CheckpointError(f"job '{job.name}' has no {file.as_posix()} (run it with "
                                      "wiseft.save_checkpoints=true)")
        runs.append(Run(job, read_metadata(job.path / FINETUNED)))
    return runs


def group_runs(runs: Sequence[Run], vary: Sequence[str] | None = ("seed",)) -> list[Group]:
    """Group the runs that differ only in the ``vary`` keys (``None``: all runs in one group), in order."""
    groups: dict[str, Group] = {}
    for run in runs:
        key = {} if vary is None else {k: v for k, v in run.job.params.items() if k not in vary}
        ident = json.dumps(key, sort_keys=True, default=str)
        groups.setdefault(ident, Group([], key)).runs.append(run)
    return list(groups.values())


def check_group(group: Group, methods: Sequence[str], vary: Sequence[str] | None) -> None:
    """Raise unless the group's runs can be merged: two or more, one architecture, one class list.

    Raises:
        ConfigError: One run only (names it and the methods that need two).
        CheckpointError: Two runs of different architectures or classes (names both).
    """
    first = group.runs[0]
    if len(group.runs) < 2:
        where = f"group {group.label}" if group.key else "the multirun"
        grouping = "--vary all" if vary is None else f"--vary {','.join(vary)}"
        raise ConfigError(f"merging needs two or more fine-tuned runs ({', '.join(methods)}), but {where} has only "
                          f"job '{first.name}' (runs are merged when they differ only in the {grouping} keys)")
    for other in group.runs[1:]:
        pair = f"jobs '{first.name}' and '{other.name}' cannot be merged"
        for key in _SAME_MODEL_KEYS:
            a, b = first.meta["model"].get(key), other.meta["model"].get(key)
            if a != b:
                raise CheckpointError(f"{pair}: model.{key} is '{a}' in '{first.name}' but '{b}' in '{other.name}'")
        a, b = first.meta["classnames"], other.meta["classnames"]
        if a != b:
            raise CheckpointError(f"{pair}: their classes differ ('{first.name}': {_classes(a)}; "
                                  f"'{other.name}': {_classes(b)})")


def _classes(names: Sequence[str]) -> str:
    shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
    return f"{len(names)} classes [{shown}]"


def check_same_zeroshot(group: Group) -> None:
    """Raise unless every run of the group was fine-tuned from the same zero-shot weights (read key by key).

    Raises:
        CheckpointError: Naming both jobs and the first key that differs.
    """
    first = group.runs[0]
    with safe_open(str(first.zeroshot), framework="pt") as ref:
        keys = set(ref.keys())
        for other in group.runs[1:]:
            pair = f"jobs '{first.name}' and '{other.name}' start from different zero-shot weights"
            with safe_open(str(other.zeroshot), framework="pt") as f:
                if set(f.keys()) != keys:
                    raise CheckpointError(f"{pair} (their keys differ)")
                for key in sorted(keys):
                    a, b = ref.get_tensor(key), f.get_tensor(key)
                    if a.shape != b.shape or not torch.allclose(a.float(), b.float(), rtol=ZEROSHOT_RTOL, atol=1e-6):
                        raise CheckpointError(f"{pair} (first difference: '{key}'); soups and Model Stock average "
                                              "runs of one initialisation")
