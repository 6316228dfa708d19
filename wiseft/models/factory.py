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
from wiseft.io.safeload import check_weights_file
from wiseft.models.weights import (
    LOCAL_DIR,
    LOCAL_DIR_PATTERNS,
    WeightsSource,
    check_activation,
    quick_gelu_mismatch_is_an_error,
    resolve_weights,
)

log = logging.getLogger(__name__)

#: Model-config JSONs shipped with the package (tiny models); registered with open_clip on first use.
PACKAGE_MODEL_CONFIGS = Path(__file__).parent / "configs"

_registered: set[str] = set()


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

    def training_transform(self, augment: bool = True) -> Callable:
        """The preprocessing to fine-tune with: the augmenting one, or the evaluation one when ``augment`` is off."""
        return self.train_transform if augment else self.eval_transform


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


def check_model_args(
    name: str,
    pretrained: str | None,
    *,
    config_file: str | None = None,
    cache_dir: str | None = None,
    force_quick_gelu: bool = False,
    allow_download: bool = True,
    fetch: bool = True,
) -> WeightsSource:
    """Fail fast, before any model is built, on an unknown model, missing weights or a wrong activation.

    A pretrained tag that is not cached is downloaded here if allowed and ``fetch`` (see
    :mod:`wiseft.models.weights`).

    Returns:
        Where the weights are and how to build the model.

    Raises:
        ConfigError: Naming the offending key and value.
    """
    register_model_configs(PACKAGE_MODEL_CONFIGS)
    if config_file:
        register_model_configs(config_file)
    source = resolve_weights(name, pretrained, cache_dir=cache_dir, force_quick_gelu=force_quick_gelu,
                             allow_download=allow_download, fetch=fetch)
    check_weight_files(source)
    return source


def check_weight_files(source: WeightsSource) -> None:
    """Refuse, before anything is built, a weights file that is truncated, not weights, or a pickle that would
    run code (TorchScript archives are read by ``torch.jit.load``'s own deserialiser and only checked to be one).

    Raises:
        CheckpointError: Naming the key and the file.
    """
    if source.name.startswith(LOCAL_DIR):
        folder = Path(source.name.removeprefix(LOCAL_DIR))
        for weights in sorted(p for pattern in LOCAL_DIR_PATTERNS for p in folder.glob(pattern)):
            check_weights_file(weights, "model.name")
    elif source.checkpoint is not None and source.weights_only:
        check_weights_file(source.checkpoint, "model.pretrained")


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
    allow_download: bool = True,
) -> ClipBundle:
    """Build an open_clip model with its transforms and tokenizer.

    Args:
        name: open_clip architecture (``ViT-B-32``, ``toy-clip``...) or ``local-dir:<folder>``/``hf-hub:<repo>``.
        pretrained: A pretrained tag (``openai``, ``laion2b_s34b_b79k``), a local weights file, or ``None`` for
            random initialisation. A tag is read from open_clip's cache, downloaded only if not cached.
        config_file: An extra open_clip model-config JSON (or folder of them) to register first.
        force_quick_gelu: Build the QuickGELU variant. Tags that need it (OpenAI's) get it without asking.
        tokenizer_kwargs: Passed to ``open_clip.get_tokenizer`` (for example a small ``bpe_path``).
        cache_dir: Where open_clip caches downloaded weights.
        precision: open_clip precision string.
        aug_cfg: open_clip training augmentation overrides (for example ``{"scale": [0.9, 1.0]}``).
        allow_download: Whether a tag missing from the cache may be downloaded.

    Returns:
        The model and its preprocessing, in eval mode.
    """
    source = check_model_args(name, pretrained, config_file=config_file, cache_dir=cache_dir,
                              force_quick_gelu=force_quick_gelu, allow_download=allow_download)
    try:
        with quick_gelu_mismatch_is_an_error():
            model, train_transform, eval_transform = open_clip.create_model_and_transforms(
                source.name,
                pretrained=source.checkpoint,
                precision=precision,
                force_quick_gelu=bool(source.quick_gelu),
                cache_dir=cache_dir,
                aug_cfg=dict(aug_cfg) if aug_cfg else None,
                require_pretrained=source.checkpoint is not None,
                weights_only=source.weights_only,
                **source.preprocess,
            )
    except pickle.UnpicklingError as err:  # weights fetched here (hf-hub:) that are not plain data
        raise CheckpointError(f"model.pretrained: refusing to load the weights of '{name}': they are a pickle that "
                              "names Python objects, and loading it could run code") from err
    check_activation(model, source.quick_gelu, source.name)
    tokenizer = open_clip.get_tokenizer(source.name, **dict(tokenizer_kwargs or {}))
    model.eval()
    log.info("built open_clip model %s (pretrained=%s, quick_gelu=%s)", source.name, source.tag or source.checkpoint,
             source.quick_gelu)
    return ClipBundle(model, train_transform, eval_transform, tokenizer)
