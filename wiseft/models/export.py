"""Export a classifier checkpoint as a plain open_clip model plus its head, loadable without this package.

Writes three files into a folder:

- ``open_clip_model.safetensors``: a full open_clip state dict. The image tower (``visual.*``) is the
  checkpoint's ``image_encoder.*``; the text tower and ``logit_scale`` come from the original pretrained model
  named in the checkpoint's metadata (the classifier never held them). ``open_clip.create_model(name,
  pretrained=<this file>)`` loads it.
- ``open_clip_config.json``: model and preprocessing config, so ``open_clip.create_model_and_transforms(
  "local-dir:<folder>")`` works too.
- ``head.safetensors``: the classification head (``weight``, ``bias``; class names in the metadata). Its logits
  are ``F.normalize(model.encode_image(x)) @ weight.T + bias``; :func:`load_head` rebuilds it as a module.

``python -m wiseft.models.export <checkpoint.safetensors> <folder>``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from wiseft.errors import CheckpointError, WiseftError
from wiseft.io.atomic import atomic_write, atomic_write_text
from wiseft.io.checkpoints import load_weights
from wiseft.models.classifier import ClassificationHead

OPEN_CLIP_WEIGHTS = "open_clip_model.safetensors"
OPEN_CLIP_CONFIG = "open_clip_config.json"
HEAD_WEIGHTS = "head.safetensors"
ENCODER_PREFIX = "image_encoder."
VISUAL_PREFIX = "visual."


def merge_into_clip(classifier_state: Mapping[str, torch.Tensor], clip_state: Mapping[str, torch.Tensor],
                    source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """A full open_clip state dict: ``visual.*`` from the classifier's ``image_encoder.*``, the rest from CLIP.

    Raises:
        CheckpointError: The image towers' keys or shapes differ (names the first such key).
    """
    encoder = {k[len(ENCODER_PREFIX):]: v for k, v in classifier_state.items() if k.startswith(ENCODER_PREFIX)}
    visual = {k[len(VISUAL_PREFIX):]: v for k, v in clip_state.items() if k.startswith(VISUAL_PREFIX)}
    missing = sorted(set(visual) - set(encoder))
    unexpected = sorted(set(encoder) - set(visual))
    if missing:
        raise CheckpointError(f"{source}: key '{ENCODER_PREFIX}{missing[0]}' is missing for the open_clip image "
                              f"tower ({len(missing)} keys missing)")
    if unexpected:
        raise CheckpointError(f"{source}: key '{ENCODER_PREFIX}{unexpected[0]}' has no place in the open_clip "
                              f"image tower ({len(unexpected)} such keys)")
    merged = {k: v.detach().cpu().contiguous().clone() for k, v in clip_state.items()}
    for key, tensor in encoder.items():
        target = merged[VISUAL_PREFIX + key]
        if tuple(tensor.shape) != tuple(target.shape):
            raise CheckpointError(f"{source}: key '{ENCODER_PREFIX}{key}' has shape {tuple(tensor.shape)}, the "
                                  f"open_clip image tower expects {tuple(target.shape)}")
        merged[VISUAL_PREFIX + key] = tensor.detach().cpu().to(target.dtype).contiguous().clone()
    return merged


def _model_config(model: Mapping[str, Any]) -> dict[str, Any]:
    import open_clip

    from wiseft.models.factory import register_model_configs

    if model.get("config_file"):
        register_model_configs(model["config_file"])
    cfg = open_clip.get_model_config(model["name"])
    if cfg is None:
        raise CheckpointError(f"open_clip has no model config for '{model['name']}'")
    cfg = dict(cfg)
    if model.get("force_quick_gelu"):
        cfg["quick_gelu"] = True
    return cfg


def export_state(
    classifier_state: Mapping[str, torch.Tensor],
    metadata: Mapping[str, Any],
    out_dir: str | Path,
    pretrained: str | None = None,
) -> dict[str, Path]:
    """Write a classifier state dict as an open_clip model folder (see the module docstring).

    Args:
        classifier_state: ``image_encoder.*`` and ``head.*`` tensors.
        metadata: The checkpoint's metadata: ``model`` (the run's model config: name, pretrained, ...) and
            ``classnames``; ``alpha`` is recorded when present.
        out_dir: Folder to write into.
        pretrained: Where the text tower comes from, instead of ``metadata["model"]["pretrained"]``.

    Returns:
        ``{"model": ..., "config": ..., "head": ...}`` paths.

    Raises:
        CheckpointError: No model config in the metadata, or no pretrained weights to take the text tower from.
    """
    from wiseft.models.factory import build_clip

    model = dict(metadata.get("model") or {})
    if not model.get("name"):
        raise CheckpointError("the checkpoint's metadata has no model config ('model': {name, pretrained, ...})")
    pretrained = pretrained or model.get("pretrained")
    if not pretrained:
        raise CheckpointError(f"model '{model['name']}' was randomly initialised (pretrained: null), so the text "
                              "tower cannot be recovered; pass the weights it started from as pretrained")
    bundle = build_clip(model["name"], pretrained, config_file=model.get("config_file"),
                        force_quick_gelu=bool(model.get("force_quick_gelu")),
                        tokenizer_kwargs=model.get("tokenizer_kwargs"), cache_dir=model.get("cache_dir"))
    merged = merge_into_clip(classifier_state, bundle.model.state_dict())
    out_dir = Path(out_dir)
    info = {"model": json.dumps({**model, "pretrained": pretrained}), "alpha": json.dumps(metadata.get("alpha")),
            "format": "pt"}
    paths = {"model": out_dir / OPEN_CLIP_WEIGHTS, "config": out_dir / OPEN_CLIP_CONFIG,
             "head": out_dir / HEAD_WEIGHTS}
    atomic_write(paths["model"], lambda tmp: save_file(merged, str(tmp), metadata=info))
    config = {"model_cfg": _model_config(model),
              "preprocess_cfg": dict(getattr(bundle.model.visual, "preprocess_cfg", {}) or {})}
    atomic_write_text(paths["config"], json.dumps(config, indent=2) + "\n")
    head = {"weight": classifier_state["head.weight"], "bias": classifier_state["head.bias"]}
    head = {k: v.detach().cpu().float().contiguous().clone() for k, v in head.items()}
    head_info = {"classnames": json.dumps(metadata.get("classnames")), "normalize": "true",
                 "alpha": json.dumps(metadata.get("alpha")), "format": "pt"}
    atomic_write(paths["head"], lambda tmp: save_file(head, str(tmp), metadata=head_info))
    return paths


def export_checkpoint(checkpoint: str | Path, out_dir: str | Path, pretrained: str | None = None) -> dict[str, Path]:
    """Export a checkpoint written by a run (e.g. ``<run>/checkpoints/wiseft_chosen.safetensors``)."""
    state, metadata = load_weights(checkpoint)
    return export_state(state, metadata, out_dir, pretrained)


def load_head(path: str | Path) -> tuple[ClassificationHead, list[str] | None]:
    """The exported head as a module (L2-normalises features first) and its class names."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"head file '{path}' does not exist")
    tensors = load_file(str(path))
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    head = ClassificationHead(tensors["weight"], normalize=meta.get("normalize", "true") == "true")
    with torch.no_grad():
        head.bias.copy_(tensors["bias"])
    classnames = json.loads(meta["classnames"]) if "classnames" in meta else None
    return head, classnames


def main(argv: Sequence[str] | None = None) -> int:
    """The ``python -m wiseft.models.export`` command."""
    parser = argparse.ArgumentParser(prog="python -m wiseft.models.export",
                                     description="Export a classifier checkpoint as open_clip weights + head.")
    parser.add_argument("checkpoint", help="a classifier checkpoint (.safetensors) written by a run")
    parser.add_argument("out_dir", help="folder for open_clip_model.safetensors, open_clip_config.json, head")
    parser.add_argument("--pretrained", default=None,
                        help="weights to take the text tower from (default: the run's model.pretrained)")
    args = parser.parse_args(argv)
    try:
        paths = export_checkpoint(args.checkpoint, args.out_dir, args.pretrained)
    except WiseftError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
