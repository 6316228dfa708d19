"""Top-1 accuracy of a classifier over several datasets, each with its class projection."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch.utils.data import DataLoader

from wiseft.data.projection import project_logits
from wiseft.runtime.progress_bars import track


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    loaders: Mapping[str, DataLoader],
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Top-1 accuracy (in percent) of ``model`` on each loader.

    Each loader's dataset may carry a ``projection`` attribute that maps the model's reference-class logits onto
    its own classes; labels are in the dataset's own class space.

    Args:
        model: Maps a batch of images to reference-class logits.
        loaders: Name -> loader.
        device: Where to run the model.

    Returns:
        Name -> accuracy in [0, 100].
    """
    was_training = model.training
    model.eval()
    results = {}
    for name, loader in loaders.items():
        results[name] = accuracy(model, loader, device, description=f"evaluating {name}")
    model.train(was_training)
    return results


@torch.no_grad()
def correct_counts(model: torch.nn.Module, loader: Iterable, device: torch.device | str = "cpu",
                   description: str = "evaluating") -> tuple[int, int]:
    """``(correct, total)`` top-1 counts of ``model`` on one loader, through the dataset's projection.

    Integer counts rather than a running mean: they add up exactly across processes and shards.
    """
    projection = getattr(loader.dataset, "projection", None)
    correct = total = 0
    for images, labels in track(loader, description):
        logits = project_logits(model(images.to(device)), projection)
        correct += int((logits.argmax(dim=-1).cpu() == labels).sum())
        total += len(labels)
    return correct, total


def accuracy(model: torch.nn.Module, loader: Iterable, device: torch.device | str = "cpu",
             description: str = "evaluating") -> float:
    """Top-1 accuracy (in percent) of ``model`` on one loader (``description`` labels its progress bar)."""
    correct, total = correct_counts(model, loader, device, description)
    if total == 0:
        raise ValueError("cannot evaluate on an empty dataset")
    return 100.0 * correct / total
