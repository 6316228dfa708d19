"""Lightning checkpoint I/O that writes atomically in place and never unpickles code.

Lightning's own :class:`~lightning.pytorch.plugins.io.TorchCheckpointIO` stages local checkpoints in the system
temp folder and moves them; when that folder is on another file system (the usual case on clusters: local
``/tmp``, shared output folder) the move is a copy, and a kill during it leaves a truncated ``last.ckpt``. This
plugin writes the temporary file next to the checkpoint and renames it, and it loads with ``weights_only=True``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from wiseft.io.atomic import atomic_write
from wiseft.io.safeload import load_torch_file


def _is_local(path: str | Path) -> bool:
    return "://" not in str(path) or str(path).startswith("file://")


class SafeCheckpointIO(TorchCheckpointIO):
    """Atomic local saves; loads refuse pickles that would run code (one-line :class:`CheckpointError`)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        if storage_options is not None or not _is_local(path):
            # Object stores replace whole objects atomically already; Lightning's path handles them.
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        local = Path(str(path).removeprefix("file://"))
        atomic_write(local, lambda tmp: torch.save(checkpoint, tmp))

    def load_checkpoint(
        self,
        path: str | Path,
        map_location: Callable | None = lambda storage, loc: storage,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        # ``weights_only`` is ignored on purpose: checkpoints are always read as plain data.
        if not _is_local(path):
            return super().load_checkpoint(path, map_location=map_location, weights_only=True)
        return load_torch_file(str(path).removeprefix("file://"), "ckpt_path", map_location=map_location)
