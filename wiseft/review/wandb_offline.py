"""Read offline W&B runs without a server, through wandb's own reader (``wandb leet inspect``).

An offline run folder (``<run>/wandb/offline-run-*/``) holds ``run-<id>.wandb``, the transaction log of every
record the run sent, and ``files/`` with the media it logged (tables as ``*.table.json``). ``wandb leet inspect
--json`` decodes the log with the wandb-core binary that ships with the package; this module wraps it.
Upload such a run later with ``wandb sync <folder>``, or browse it with ``wandb leet <folder>``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from wiseft.errors import DataError


def run_files(folder: str | Path) -> list[Path]:
    """Every ``.wandb`` transaction log under ``folder``, sorted."""
    return sorted(Path(folder).rglob("run-*.wandb"))


def _inspect(path: Path, *flags: str) -> str:
    if not path.is_file():
        raise DataError(f"W&B transaction log '{path}' does not exist")
    proc = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", *flags, str(path)],
                          capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0:
        first = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise DataError(f"wandb could not read '{path}': {first}")
    return proc.stdout


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Every record of a ``.wandb`` log, decoded (``{"num", "type", <type>: {...}}``)."""
    return [json.loads(line) for line in _inspect(Path(path)).splitlines() if line.strip()]


def read_summary(path: str | Path) -> dict[str, Any]:
    """The run's final state: ``state``, ``summary``, ``config``, ``project``, ``run_id``..."""
    return json.loads(_inspect(Path(path), "--summary"))


def read_table(path: str | Path, key: str, state: dict[str, Any] | None = None) -> tuple[list[str], list[list[Any]]]:
    """``(columns, data)`` of the table the run logged under ``key`` (its last version).

    Args:
        path: The run's ``.wandb`` file.
        key: The key the table was logged under.
        state: The run's :func:`read_summary`, if already read.

    Raises:
        DataError: The run logged no table under ``key``.
    """
    path = Path(path)
    ref = (state if state is not None else read_summary(path)).get("summary", {}).get(key)
    if not isinstance(ref, dict) or ref.get("_type") != "table-file":
        raise DataError(f"'{path}' has no table logged under '{key}'")
    table = json.loads((path.parent / "files" / ref["path"]).read_text())
    return table["columns"], table["data"]
