"""Image features of a frozen encoder, computed once and cached on disk (``finetune=linear``).

A cache entry is keyed by everything the features depend on: the encoder's weights (a hash of their bytes, so a
changed or retrained model never reads stale features), the image transform, the samples (paths, labels, file
sizes and modification times) and the numeric precision. The key is stored in the file and compared on
every read, so a hash collision or a hand-copied file cannot be mistaken for a hit.

Under several processes each computes its shard, writes it next to the cache entry, and rank 0 assembles the
entry; the cache folder must therefore be visible to every process (on a cluster: a shared file system).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, Subset

from wiseft.errors import ConfigError
from wiseft.io.atomic import atomic_write
from wiseft.runtime.distributed import shard_indices

log = logging.getLogger(__name__)

FORMAT = "wiseft-features-v1"


def module_fingerprint(module: torch.nn.Module) -> str:
    """Hash of a module's state dict: names, dtypes, shapes and bytes of every tensor."""
    digest = hashlib.blake2b(digest_size=20)
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.view(-1).view(torch.uint8).numpy().data if t.numel() else b"")
    return digest.hexdigest()


def transform_fingerprint(transform: Callable | None) -> str:
    """The transform's ``repr`` (torchvision's lists every parameter), without per-process memory addresses."""
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(transform))


def samples_fingerprint(samples: Sequence[tuple[str, int]]) -> str:
    """Hash of the ``(path, label)`` samples with each file's size and modification time."""
    digest = hashlib.blake2b(digest_size=20)
    for path, label in samples:
        try:
            st = os.stat(path)
            stamp = f"{st.st_size}|{st.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        digest.update(f"{path}|{label}|{stamp}\n".encode())
    return digest.hexdigest()


def feature_key(encoder: torch.nn.Module, dataset: Any, precision: str, encoder_hash: str | None = None) -> dict:
    """Everything the features of ``dataset`` under ``encoder`` depend on.

    Args:
        encoder: The frozen image encoder.
        dataset: A :class:`~wiseft.data.datasets.LabeledImageDataset` (``samples`` and ``transform``).
        precision: The numeric precision the encoder runs in (e.g. Lightning's ``32-true``/``bf16-mixed``).
        encoder_hash: :func:`module_fingerprint` of ``encoder`` when already known.
    """
    return {
        "format": FORMAT,
        "encoder": encoder_hash or module_fingerprint(encoder),
        "transform": transform_fingerprint(dataset.transform),
        "samples": samples_fingerprint(dataset.samples),
        "num_samples": len(dataset),
        "precision": precision,
    }


def key_digest(key: dict) -> str:
    """File stem of a cache entry."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Features:
    """Features and labels of a dataset, in its sample order."""

    features: torch.Tensor
    labels: torch.Tensor


class FeatureCache:
    """A folder of safetensors files, one per key."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder).expanduser()

    def path(self, key: dict) -> Path:
        """Where the entry of ``key`` lives."""
        return self.folder / f"{key_digest(key)}.safetensors"

    def load(self, key: dict) -> Features | None:
        """The entry of ``key``, or ``None`` if absent, unreadable or written for another key."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as f:
                stored = json.loads((f.metadata() or {}).get("key", "null"))
            if stored != key:
                log.warning("feature cache %s holds another key; recomputing", path)
                return None
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as err:
            log.warning("feature cache %s is unreadable (%s); recomputing", path, err)
            return None
        return Features(tensors["features"], tensors["labels"])

    def save(self, key: dict, features: Features, path: Path | None = None) -> Path:
        """Write an entry atomically (a crash never leaves a truncated entry that looks valid)."""
        path = path or self.path(key)
        tensors = {"features": features.features.contiguous(), "labels": features.labels.contiguous()}
        meta = {"key": json.dumps(key, sort_keys=True)}
        atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))
        return path


@torch.no_grad()
def extract_features(
    encoder: torch.nn.Module,
    dataset: Any,
    indices: Sequence[int] | None = None,
    device: torch.device | str = "cpu",
    batch_size: int = 128,
    num_workers: int = 0,
    forward_context: Callable[[], AbstractContextManager] | None = None,
) -> Features:
    """Run ``encoder`` over ``dataset`` (or the ``indices`` of it); features come back as float32 on the CPU."""
    subset = dataset if indices is None else Subset(dataset, list(indices))
    loader = DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    was_training = encoder.training
    encoder.eval()
    chunks, labels = [], []
    try:
        for images, batch_labels in loader:
            if forward_context is None:
                out = encoder(images.to(device, non_blocking=True))
            else:
                with forward_context():
                    out = encoder(images.to(device, non_blocking=True))
            chunks.append(out.float().cpu())
            labels.append(torch.as_tensor(batch_labels))
    finally:
        encoder.train(was_training)
    if not chunks:
        return Features(torch.zeros(0, 0), torch.zeros(0, dtype=torch.long))
    return Features(torch.cat(chunks), torch.cat(labels).long())


class Collectives(Protocol):
    """What :func:`cached_features` needs from a Lightning strategy."""

    def barrier(self, name: str | None = None) -> None: ...

    def broadcast(self, obj: Any, src: int = 0) -> Any: ...

    def reduce_boolean_decision(self, decision: bool, all: bool = True) -> bool: ...


def cached_features(
    encoder: torch.nn.Module,
    dataset: Any,
    key: dict,
    cache: FeatureCache | None,
    *,
    rank: int = 0,
    world_size: int = 1,
    collectives: Collectives | None = None,
    **extract_kwargs: Any,
) -> Features:
    """The features of ``dataset``: read from ``cache`` if present, else computed (sharded) and written.

    Every process returns the features of the whole dataset.

    Args:
        encoder: The frozen image encoder.
        dataset: The dataset.
        key: :func:`feature_key` of ``(encoder, dataset)``.
        cache: Where entries live; ``None`` computes in memory (one process only).
        rank: This process's global rank.
        world_size: Number of processes.
        collectives: The strategy (barrier, broadcast, boolean reduction); needed when ``world_size > 1``.
        **extract_kwargs: Passed to :func:`extract_features` (device, batch size...).

    Raises:
        ConfigError: Several processes but no cache folder to gather the shards through.
    """
    if world_size > 1 and (cache is None or collectives is None):
        raise ConfigError("finetune.feature_cache: linear fine-tuning on several processes gathers the feature "
                          "shards through the cache folder; set it to a folder every process can read")
    found = cache.load(key) if cache is not None else None
    if world_size > 1:  # every process must take the same branch
        found = found if collectives.reduce_boolean_decision(found is not None, all=True) else None
    if found is not None:
        return found
    if world_size == 1:
        features = extract_features(encoder, dataset, **extract_kwargs)
        if cache is not None:
            cache.save(key, features)
        return features
    shard = extract_features(encoder, dataset, shard_indices(len(dataset), rank, world_size), **extract_kwargs)
    token = collectives.broadcast(uuid.uuid4().hex if rank == 0 else None, src=0)
    stem = cache.path(key).with_suffix("")
    parts = [Path(f"{stem}.{token}.part{r}.safetensors") for r in range(world_size)]
    cache.save(key, shard, parts[rank])
    collectives.barrier("wiseft-features-parts")
    if rank == 0:
        pieces = [load_file(str(p)) for p in parts]
        dim = next(p["features"].shape[1] for p in pieces if p["features"].numel())
        features = torch.empty(len(dataset), dim)
        labels = torch.empty(len(dataset), dtype=torch.long)
        for r, piece in enumerate(pieces):
            index = torch.tensor(list(shard_indices(len(dataset), r, world_size)), dtype=torch.long)
            if len(index):
                features[index], labels[index] = piece["features"], piece["labels"]
        cache.save(key, Features(features, labels))
        for p in parts:
            p.unlink(missing_ok=True)
    collectives.barrier("wiseft-features-merged")
    merged = cache.load(key)
    if merged is None:
        raise RuntimeError(f"feature cache entry {cache.path(key)} is missing after it was written")
    return merged
