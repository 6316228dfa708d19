"""Builds open_clip models, their transforms and tokenizers from typed arguments."""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import open_clip
import torch

from wiseft.errors import CheckpointError, ConfigError
from wiseft.safeload import check_weights_file

log = logging.getLogger(__name__)

#: Model-config JSONs shipped with the package (tiny models); registered with open_clip on first use.
PACKAGE_MODEL_CONFIGS = Path(__file__).parent / "configs"

_registered: set[str] = set()

# Things that say "this is a file", as opposed to a pretrained tag such as "openai" or "laion2b_s34b_b79k".
_WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt", ".npz")
# The weight files open_clip looks for in a ``local-dir:`` model folder.
LOCAL_DIR_WEIGHTS = ("*.safetensors", "*.bin", "*.pth")


@dataclass
class ClipBundle:
    """Everything the pipeline needs from open_clip.

    Attributes:
        model: The full CLIP model (image and text towers).
        train_transform: Training-time preprocessing (open_clip's augmentation).
        eval_transform: Evaluation-time preprocessing.
        tokenizer: Tokenizer matching the text tower.
    """

    model: torch.nn.Module
    train_transform: Callable
    eval_transform: Callable
    tokenizer: Callable


def register_model_configs(path: str | Path) -> None:
    """Register an open_clip model-config JSON file, or every JSON in a folder, with open_clip.

    Args:
        path: A ``.json`` file or a folder of them; each file's stem becomes a model name.

    Raises:
        ConfigError: If the path does not exist.
    """
    path = Path(path).expanduser().resolve()
    if str(path) in _registered:
        return
    if not path.exists():
        raise ConfigError(f"model.config_file: model config '{path}' does not exist")
    open_clip.add_model_config(path)
    _registered.add(str(path))


def _looks_like_file(pretrained: str) -> bool:
    return pretrained.endswith(_WEIGHT_SUFFIXES) or "/" in pretrained or pretrained.startswith(".")


def check_model_args(name: str, pretrained: str | None) -> None:
    """Fail fast, before any weights are read, on an unknown model name or a missing weights file.

    Raises:
        ConfigError: Naming the offending key and value.
    """
    register_model_configs(PACKAGE_MODEL_CONFIGS)
    if name.startswith("local-dir:"):
        folder = Path(name.removeprefix("local-dir:")).expanduser()
        if not (folder / "open_clip_config.json").is_file():
            raise ConfigError(f"model.name: '{name}' needs a folder holding open_clip_config.json; '{folder}' has none")
        for weights in sorted(p for pattern in LOCAL_DIR_WEIGHTS for p in folder.glob(pattern)):
            check_weights_file(weights, "model.name")
        return
    if name.startswith("hf-hub:"):
        return
    if name not in open_clip.list_models():
        known = ", ".join(m for m in open_clip.list_models() if "-" in m)[:200]
        raise ConfigError(f"model.name: unknown open_clip model '{name}' (known include: {known}, ...)")
    if pretrained and _looks_like_file(pretrained):
        if not Path(pretrained).expanduser().is_file():
            raise ConfigError(f"model.pretrained: weights file '{pretrained}' does not exist")
        # Truncated, not weights, or a pickle that would run code: refuse now, before anything is built.
        check_weights_file(pretrained, "model.pretrained")


def build_clip(
    name: str,
    pretrained: str | None = None,
    *,
    config_file: str | None = None,
    force_quick_gelu: bool = False,
    tokenizer_kwargs: Mapping[str, Any] | None = None,
    cache_dir: str | None = None,
    precision: str = "fp32",
    aug_cfg: Mapping[str, Any] | None = None,
) -> ClipBundle:
    """Build an open_clip model with its transforms and tokenizer.

    Args:
        name: open_clip architecture (``ViT-B-32``, ``toy-clip``...) or ``local-dir:<folder>``/``hf-hub:<repo>``.
        pretrained: A pretrained tag (``openai``, ``laion2b_s34b_b79k``), a local weights file, or ``None`` for
            random initialisation.
        config_file: An extra open_clip model-config JSON (or folder of them) to register first.
        force_quick_gelu: Build the QuickGELU variant (what OpenAI's weights were trained with).
        tokenizer_kwargs: Passed to ``open_clip.get_tokenizer`` (for example a small ``bpe_path``).
        cache_dir: Where open_clip caches downloaded weights.
        precision: open_clip precision string.
        aug_cfg: open_clip training augmentation overrides (for example ``{"scale": [0.9, 1.0]}``).

    Returns:
        The model and its preprocessing, in eval mode.
    """
    if config_file:
        register_model_configs(config_file)
    check_model_args(name, pretrained)
    pretrained_arg = str(Path(pretrained).expanduser()) if pretrained and _looks_like_file(pretrained) else pretrained
    try:
        model, train_transform, eval_transform = open_clip.create_model_and_transforms(
            name,
            pretrained=pretrained_arg,
            precision=precision,
            force_quick_gelu=force_quick_gelu,
            cache_dir=cache_dir,
            aug_cfg=dict(aug_cfg) if aug_cfg else None,
            weights_only=True,
        )
    except pickle.UnpicklingError as err:  # downloaded weights (a pretrained tag, hf-hub:) that are not plain data
        raise CheckpointError(f"model.pretrained: refusing to load the weights of '{name}' ({pretrained}): they "
                              "are a pickle that names Python objects, and loading it could run code") from err
    tokenizer = open_clip.get_tokenizer(name, **dict(tokenizer_kwargs or {}))
    model.eval()
    log.info("built open_clip model %s (pretrained=%s)", name, pretrained)
    return ClipBundle(model, train_transform, eval_transform, tokenizer)
