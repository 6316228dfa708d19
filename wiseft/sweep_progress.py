"""Finished rows of an interrupted sweep, so a relaunch does not evaluate those alphas again.

``sweep_progress.jsonl`` in the run folder holds one line per evaluated alpha, each tagged with a fingerprint of
what the row depends on (both endpoint weights and the evaluation sets). A relaunch reuses the rows whose
fingerprint matches and evaluates the rest; rows of other weights or data are ignored. The file is rewritten
atomically after every row.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from wiseft.io import atomic_write_text

log = logging.getLogger(__name__)

PROGRESS_JSONL = "sweep_progress.jsonl"

Row = dict[str, float]


def fingerprint(
    theta_0: Mapping[str, torch.Tensor], theta_1: Mapping[str, torch.Tensor], eval_sets: Mapping[str, Any]
) -> str:
    """SHA-256 over both endpoints' tensors (names, dtypes, shapes, bytes) and a description of the eval sets."""
    digest = hashlib.sha256()
    for state in (theta_0, theta_1):
        for key in sorted(state):
            tensor = state[key].detach().to("cpu").contiguous()
            digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
            digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    digest.update(json.dumps(eval_sets, sort_keys=True, default=str).encode())
    return digest.hexdigest()


class SweepProgress:
    """The progress file of one sweep (``fingerprint`` identifies the weights and data it belongs to)."""

    def __init__(self, out_dir: str | Path, fingerprint: str) -> None:
        self.path = Path(out_dir) / PROGRESS_JSONL
        self.fingerprint = fingerprint
        self._lines: list[str] = []
        self.done: dict[float, Row] = {}
        self._read()

    def _read(self) -> None:
        if not self.path.is_file():
            return
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(record, dict) or record.get("fingerprint") != self.fingerprint:
                continue  # another run's weights or data: recompute
            row = record.get("row")
            if isinstance(row, dict) and "alpha" in row:
                self.done[float(row["alpha"])] = row
                self._lines.append(line)
        if self.done:
            log.info("reusing %d evaluated alpha(s) from %s", len(self.done), self.path)

    def record(self, row: Row) -> None:
        """Add a finished row and rewrite the file atomically."""
        self.done[float(row["alpha"])] = dict(row)
        self._lines.append(json.dumps({"fingerprint": self.fingerprint, "row": dict(row)}))
        atomic_write_text(self.path, "".join(line + "\n" for line in self._lines))
