"""Atomic file writes: a crash never leaves a truncated file that looks complete."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

# The process umask, read once (reading it means setting it): temporary files are created 0600, and the final file
# should get the mode a plain ``open(path, "w")`` would have given it.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def _fsync(path: Path) -> None:
    # Without it a machine crash after the rename can leave an empty file under the final name.
    with open(path, "rb") as f:
        os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is synced and renamed over ``path``, on error removed.

    The temporary file lives in the destination folder, so the rename never crosses file systems (a copy there
    would not be atomic).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        tmp_path.chmod(0o666 & ~_UMASK)
        _fsync(tmp_path)
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write(path: str | Path, writer: Callable[[Path], None]) -> None:
    """Call ``writer(tmp_path)`` and move the result to ``path`` atomically."""
    with atomic_path(path) as tmp:
        writer(tmp)


def check_writable(folder: str | Path) -> Path:
    """Create ``folder`` if needed and check a file can be written there.

    Raises:
        PermissionError: One line naming the folder.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test."):
            pass
    except OSError as err:
        raise PermissionError(f"output folder '{folder}' is not writable: {err.strerror}") from err
    return folder


def check_creatable(folder: str | Path) -> Path:
    """Check, without creating anything, that ``folder`` exists writable or could be created.

    Raises:
        PermissionError: One line naming the folder and the path component that is in the way.
    """
    folder = Path(folder).expanduser().absolute()
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise PermissionError(f"output folder '{folder}' cannot be created: '{existing}' is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "is not writable" if existing == folder else f"cannot be created: '{existing}' is not writable"
        raise PermissionError(f"output folder '{folder}' {what}")
    return folder
