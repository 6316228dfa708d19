"""Loading weight files without running code from them.

Every torch file is read with ``torch.load(weights_only=True)``: tensors, numbers, strings and plain containers only.
A pickle that names any other Python object (``os.system``, a class of some package) is refused with a one-line
:class:`~wiseft.errors.CheckpointError` instead of being executed. Safetensors files hold no code by design.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from wiseft.errors import CheckpointError

_REFUSED_GLOBAL = re.compile(r"(?:unsupported GLOBAL|Unsupported global: GLOBAL)\s+([\w.]+)", re.IGNORECASE)
_UNPICKLER_ERROR = re.compile(r"WeightsUnpickler error:\s*(.+)")


def _refusal_reason(err: BaseException) -> str:
    text = str(err)
    if match := _REFUSED_GLOBAL.search(text):
        return f"it names the Python object '{match.group(1)}'"
    if match := _UNPICKLER_ERROR.search(" ".join(text.split())):
        return f"it is not a plain weights pickle ({match.group(1).split(' Check the documentation')[0][:80]})"
    return "it is not a plain weights pickle"


def load_torch_file(path: str | Path, what: str, map_location: Any = "cpu", mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True)`` with one-line errors.

    Args:
        path: The file.
        what: The config key or role of the file, for messages (``model.pretrained``, ``ckpt_path``).
        map_location: As for ``torch.load``.
        mmap: Map the file instead of reading it (cheap validation of a large file); falls back to reading for
            files in the legacy, non-zip format.

    Raises:
        CheckpointError: Missing file, a pickle that would run code, or a truncated / non-torch file.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"{what}: checkpoint '{path}' does not exist")
    try:
        try:
            return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
        except RuntimeError as err:
            if not (mmap and "mmap can only be used" in str(err)):
                raise
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(f"{what}: refusing to load '{path}': {_refusal_reason(err)}, and loading it could run "
                              "code (only tensors and plain containers are read; convert it to safetensors)") from err
    except (RuntimeError, EOFError, OSError, KeyError, ValueError, zipfile.BadZipFile) as err:
        reason = _first_sentence(err)
        raise CheckpointError(f"{what}: '{path}' is truncated or not a PyTorch checkpoint ({reason})") from err


def _first_sentence(err: BaseException) -> str:
    text = " ".join(str(err).split())
    if not text or isinstance(err, KeyError):
        return f"{type(err).__name__}: {text}" if text else type(err).__name__
    return re.split(r"(?<=\.)\s", text)[0][:160]


def check_safetensors(path: str | Path, what: str) -> None:
    """Check that ``path`` is a complete safetensors file (header and every tensor's bytes).

    Raises:
        CheckpointError: Missing, truncated or not safetensors (names the file).
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"{what}: checkpoint '{path}' does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
            # Touching the last tensor makes safetensors check the data section reaches that far.
            if keys:
                f.get_slice(keys[-1])
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{what}: '{path}' is truncated or not a safetensors file ({err})") from err


def check_weights_file(path: str | Path, what: str) -> None:
    """Validate a weights file cheaply before it is used: safetensors by header, torch files by a mapped load.

    Raises:
        CheckpointError: As :func:`load_torch_file` / :func:`check_safetensors`.
    """
    if str(path).endswith(".safetensors"):
        check_safetensors(path, what)
    else:
        load_torch_file(path, what, mmap=True)
