"""Finished parts of an interrupted sweep, so a relaunch does not evaluate them again.

The sweep evaluates every alpha on each decoded image (:mod:`wiseft.sweep.engine`), so its unit of completion is
an evaluation set: once a set's images have all been through every method and alpha, its integer statistics
(:mod:`wiseft.sweep.stats`) are final. ``sweep_progress.jsonl`` in the run folder (``sweep_progress.rank<r>.jsonl``
per process under DDP, each holding its own shard's statistics) gets one line per finished set, tagged with a
fingerprint of everything they depend on: both endpoint weights, the alpha grid, the methods and calibration bins,
and the sets (names, roles, shard sizes). A relaunch reuses the sets whose fingerprint matches and evaluates the
rest; lines of other weights, grids or data are ignored. The file is rewritten atomically after every set.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from wiseft.io.atomic import atomic_write_text

log = logging.getLogger(__name__)

PROGRESS_JSONL = "sweep_progress.jsonl"


def progress_path(out_dir: str | Path, rank: int = 0, world_size: int = 1) -> Path:
    """The progress file of process ``rank`` (one file when there is one process)."""
    name = PROGRESS_JSONL if world_size == 1 else f"sweep_progress.rank{rank}.jsonl"
    return Path(out_dir) / name


def fingerprint(
    theta_0: Mapping[str, torch.Tensor],
    theta_1: Mapping[str, torch.Tensor],
    grid: Sequence[float],
    eval_sets: Mapping[str, Any],
    settings: Mapping[str, Any] | None = None,
) -> str:
    """SHA-256 over both endpoints' tensors (names, dtypes, shapes, bytes), the grid, the evaluation sets and any
    other ``settings`` the statistics depend on (methods, calibration bins)."""
    digest = hashlib.sha256()
    for state in (theta_0, theta_1):
        for key in sorted(state):
            tensor = state[key].detach().to("cpu").contiguous()
            digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
            digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    described = {"grid": [float(a) for a in grid], "sets": eval_sets}
    if settings:
        described["settings"] = dict(settings)
    digest.update(json.dumps(described, sort_keys=True).encode())
    return digest.hexdigest()


class SweepProgress:
    """The progress file of one sweep on one process.

    Attributes:
        done: Evaluation-set name -> its statistics (``(methods, len(grid), width)``), for the sets finished before.
    """

    def __init__(self, path: str | Path, fingerprint: str, enabled: bool = True) -> None:
        """Args:
        path: The progress file (:func:`progress_path`).
        fingerprint: Identifies the weights, grid and data the counts belong to.
        enabled: Read and write the file (off: remember nothing, e.g. without a run folder).
        """
        self.path = Path(path)
        self.fingerprint = fingerprint
        self.enabled = enabled
        self.done: dict[str, torch.Tensor] = {}
        self._lines: list[str] = []
        if enabled:
            self._read()

    def _read(self) -> None:
        if not self.path.is_file():
            return
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)
                if record["fingerprint"] != self.fingerprint:
                    continue  # another run's weights, grid or data: evaluate again
                self.done[record["dataset"]] = torch.tensor(record["counts"], dtype=torch.long)
                self._lines.append(line)
            except (ValueError, KeyError, TypeError):
                continue
        if self.done:
            log.info("sweep: reusing the finished counts of %s from %s", ", ".join(self.done), self.path)

    def record(self, dataset: str, counts: torch.Tensor) -> None:
        """Add a finished set's statistics and rewrite the file atomically."""
        self.done[dataset] = counts.to(torch.long).cpu()
        if not self.enabled:
            return
        self._lines.append(json.dumps({"fingerprint": self.fingerprint, "dataset": dataset,
                                       "counts": counts.tolist()}))
        atomic_write_text(self.path, "".join(line + "\n" for line in self._lines))
