"""Miniature on-disk copies of ImageNet and its shifts: each release's real folder names, a few tiny images each."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from wiseft.data.imagenet import imagenet_subset, imagenet_wnids, objectnet_classes

#: Folder under ``data_dir`` -> (kind, file suffix), as ``conf/data/imagenet.yaml`` expects them.
LAYOUTS = {
    "imagenet/train": ("imagenet", ".JPEG"),
    "imagenet/val": ("imagenet", ".JPEG"),
    "imagenetv2-matched-frequency-format-val": ("imagenet_v2", ".jpeg"),
    "sketch": ("imagenet_sketch", ".JPEG"),
    "imagenet-r": ("imagenet_r", ".jpg"),
    "imagenet-a": ("imagenet_a", ".jpg"),
    "objectnet-1.0/images": ("objectnet", ".png"),
}
#: ObjectNet folders that do not map to ImageNet (the release has 200 of them): present, and ignored.
OBJECTNET_UNMAPPED = ("squeegee", "eyeglasses")
BORDER_RGB = (255, 0, 0)
INTERIOR_RGB = (40, 90, 160)


def folders_for(kind: str) -> list[str]:
    """The class folders a release ships, in label order."""
    if kind in ("imagenet", "imagenet_sketch"):
        return list(imagenet_wnids())
    if kind == "imagenet_v2":
        return [str(i) for i in range(1000)]
    if kind in ("imagenet_r", "imagenet_a"):
        return list(imagenet_subset(kind[-1])[0])
    if kind == "objectnet":
        return [c.folder for c in objectnet_classes()]
    raise ValueError(kind)


def bordered_image(size: int = 16, border: int = 2) -> Image.Image:
    """An ObjectNet-like image: a flat interior inside a ``border``-pixel red frame."""
    pixels = np.empty((size, size, 3), dtype=np.uint8)
    pixels[:] = BORDER_RGB
    pixels[border:size - border, border:size - border] = INTERIOR_RGB
    return Image.fromarray(pixels)


def _encoded(suffix: str, size: int) -> bytes:
    buffer = io.BytesIO()
    if suffix == ".png":
        bordered_image(size).save(buffer, format="PNG")
    else:
        rng = np.random.default_rng(0)
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


def make_release_tree(root: Path, kind: str, suffix: str, per_class: int = 1, size: int = 16) -> Path:
    """One release's layout under ``root``; every image is the same tiny file (writing bytes is fast)."""
    data = _encoded(suffix, size)
    folders = folders_for(kind) + (list(OBJECTNET_UNMAPPED) if kind == "objectnet" else [])
    for folder in folders:
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            (root / folder / f"img_{i}{suffix}").write_bytes(data)
    if kind in ("imagenet_r", "imagenet_a"):
        (root / "README.txt").write_text("the releases ship a README next to the class folders\n")
    return root


def make_imagenet_trees(data_dir: Path, per_class: int = 1) -> Path:
    """Every layout of ``conf/data/imagenet.yaml`` under ``data_dir``."""
    for sub, (kind, suffix) in LAYOUTS.items():
        make_release_tree(data_dir / sub, kind, suffix, per_class)
    return data_dir
