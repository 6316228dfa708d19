"""Safetensors checkpoints of image classifiers, loadable without this run's Python objects.

A checkpoint holds the classifier's state dict (``image_encoder.*`` and ``head.*``) and, as safetensors string
metadata, the model config and class names needed to rebuild the module from scratch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from wiseft.errors import CheckpointError
from wiseft.io.atomic import atomic_write

FORMAT = "wiseft-classifier-v1"


def save_weights(state_dict: Mapping[str, torch.Tensor], path: str | Path, metadata: Mapping[str, Any]) -> None:
    """Write ``state_dict`` to ``path`` atomically; ``metadata`` values are stored JSON-encoded."""
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
    meta = {"format": FORMAT, **{k: json.dumps(v) for k, v in metadata.items()}}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def load_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint written by :func:`save_weights`.

    Raises:
        CheckpointError: Missing, truncated or not-safetensors file (names it).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' does not exist")
    try:
        state_dict = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"checkpoint '{path}' is not a readable safetensors file ({err})") from err
    metadata = {k: (v if k == "format" else json.loads(v)) for k, v in raw.items()}
    return state_dict, metadata


def check_matches(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise unless ``state_dict`` has exactly ``model``'s keys and shapes.

    Raises:
        CheckpointError: Naming the first missing/unexpected key or the first key whose shapes differ.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    if missing:
        raise CheckpointError(f"{source}: key '{missing[0]}' is missing ({len(missing)} keys missing)")
    if unexpected:
        raise CheckpointError(f"{source}: unexpected key '{unexpected[0]}' ({len(unexpected)} unexpected)")
    for key, tensor in expected.items():
        if tuple(state_dict[key].shape) != tuple(tensor.shape):
            raise CheckpointError(f"{source}: key '{key}' has shape {tuple(state_dict[key].shape)}, the model "
                                  f"expects {tuple(tensor.shape)}")


def load_into(model: torch.nn.Module, path: str | Path) -> dict[str, Any]:
    """Load a checkpoint into ``model`` after checking it matches; return its metadata."""
    state_dict, metadata = load_weights(path)
    check_matches(model, state_dict, str(path))
    model.load_state_dict(state_dict)
    return metadata
