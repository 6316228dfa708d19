"""The tiny toy CLIP: open_clip model config, shipped weights, tokenizer and zero-shot evaluation helpers.

The model is a stock open_clip ``CLIP`` built from ``wiseft/models/configs/toy-clip.json``: a timm ResNet image tower
(``test_resnet``, with BatchNorm, via open_clip's ``TimmModel`` adapter) and open_clip's own text transformer.
No custom Python classes are involved, so the real-CLIP code paths (``create_model``, ``encode_image``,
``build_zero_shot_classifier``, ``ClipLoss``) are exercised.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from PIL import Image

from wiseft.toy.tokenizer import toy_tokenizer_kwargs
from wiseft.toy.vocab import CLASSNAMES, TEMPLATES

#: open_clip model name of the toy CLIP.
MODEL_NAME = "toy-clip"
#: Its model-config JSON.
CONFIG_PATH = Path(__file__).resolve().parents[1] / "models" / "configs" / f"{MODEL_NAME}.json"
#: The shipped pretrained weights (fp16 safetensors, open_clip state dict).
WEIGHTS_PATH = Path(__file__).resolve().parents[1] / "assets" / "toy_clip.safetensors"


def register_toy_config() -> None:
    """Make ``toy-clip`` known to open_clip (idempotent)."""
    if MODEL_NAME not in open_clip.list_models():
        open_clip.add_model_config(CONFIG_PATH)


def create_toy_model(pretrained: str | Path | None = WEIGHTS_PATH, model_name: str = MODEL_NAME) -> torch.nn.Module:
    """Build the toy CLIP through ``open_clip.create_model``.

    Args:
        pretrained: A weights file, or ``None`` for random initialisation.
        model_name: open_clip model name (another registered config, for architecture experiments).

    Returns:
        The model (fp32, eval mode).
    """
    register_toy_config()
    model = open_clip.create_model(model_name, pretrained=str(pretrained) if pretrained else None)
    return model.eval()


def toy_tokenizer() -> open_clip.SimpleTokenizer:
    """The toy tokenizer, through ``open_clip.get_tokenizer`` with the shipped merges file."""
    register_toy_config()
    return open_clip.get_tokenizer(MODEL_NAME, **toy_tokenizer_kwargs())


def normalisation(model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's input mean and std (from open_clip's preprocess config) as ``(1, 3, 1, 1)`` tensors."""
    cfg = open_clip.get_model_preprocess_cfg(model)
    return torch.tensor(cfg["mean"]).view(1, 3, 1, 1), torch.tensor(cfg["std"]).view(1, 3, 1, 1)


def to_input(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``uint8`` NHWC images to normalised float NCHW, identical to open_clip's eval transform on 32x32 images."""
    return (images.permute(0, 3, 1, 2).float() / 255.0 - mean) / std


def load_image_folder(folder: str | Path, limit_per_class: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Read an ImageFolder tree of the toy world into memory.

    Args:
        folder: Directory with one sub-directory per class in ``CLASSNAMES``.
        limit_per_class: Read at most this many images per class.

    Returns:
        ``uint8`` images ``(N, 32, 32, 3)`` and ``int64`` labels ``(N,)``.
    """
    images, labels = [], []
    for label, name in enumerate(CLASSNAMES):
        files = sorted((Path(folder) / name).glob("*.png"))[:limit_per_class]
        images.extend(np.asarray(Image.open(f).convert("RGB")) for f in files)
        labels.extend([label] * len(files))
    return torch.from_numpy(np.stack(images)), torch.tensor(labels)


@torch.no_grad()
def zero_shot_weights(model: torch.nn.Module, tokenizer=None) -> torch.Tensor:
    """Zero-shot head exactly as for real CLIP: ``build_zero_shot_classifier`` over ``CLASSNAMES x TEMPLATES``.

    Returns:
        ``(embed_dim, num_classes)`` normalised class embeddings.
    """
    tokenizer = tokenizer or toy_tokenizer()
    return open_clip.build_zero_shot_classifier(model, tokenizer, CLASSNAMES, TEMPLATES)


@torch.no_grad()
def predict(
    visual: torch.nn.Module,
    head: torch.Tensor,
    images: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    batch_size: int = 500,
) -> torch.Tensor:
    """Logits of ``normalize(visual(x)) @ head`` for ``uint8`` images (scale does not change the argmax)."""
    out = []
    for i in range(0, len(images), batch_size):
        feats = visual(to_input(images[i : i + batch_size], mean, std))
        out.append(F.normalize(feats, dim=-1) @ head)
    return torch.cat(out)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy in percent."""
    return 100.0 * (logits.argmax(dim=-1) == labels).float().mean().item()


def eval_sets(world: str | Path, limit_per_class: int | None = None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The evaluation sets of a world: reference val/test and the shift domains, in reporting order."""
    from wiseft.toy.domains import SHIFT_DOMAINS

    world = Path(world)
    folders = {"reference/val": world / "reference" / "val", "reference/test": world / "reference" / "test"}
    folders.update({d: world / d for d in SHIFT_DOMAINS})
    return {k: load_image_folder(v, limit_per_class) for k, v in folders.items()}


@torch.no_grad()
def zero_shot_accuracies(
    model: torch.nn.Module, sets: dict[str, tuple[torch.Tensor, torch.Tensor]], tokenizer=None
) -> dict[str, float]:
    """Zero-shot top-1 accuracy (percent) of ``model`` on each set."""
    model.eval()
    head = zero_shot_weights(model, tokenizer)
    mean, std = normalisation(model)
    return {k: accuracy(predict(model.visual, head, x, mean, std), y) for k, (x, y) in sets.items()}
