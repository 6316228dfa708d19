"""Labelled image datasets that know their class names and their class projection."""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from wiseft.data.projection import ClassProjection
from wiseft.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".JPEG")


class LabeledImageDataset(Dataset):
    """A list of ``(path, label)`` samples, decoded with PIL and transformed on access.

    Attributes:
        samples: ``(path, label)`` pairs; labels index ``classnames``.
        classnames: Display names of the dataset's own classes, in label order.
        projection: How reference-class logits map onto this dataset's classes (``None``: identity).
    """

    def __init__(
        self,
        samples: Sequence[tuple[str, int]],
        classnames: Sequence[str],
        transform: Callable | None = None,
        projection: ClassProjection | None = None,
    ) -> None:
        self.samples = list(samples)
        self.classnames = list(classnames)
        self.transform = transform
        self.projection = projection

    def __len__(self) -> int:
        return len(self.samples)

    def load_image(self, index: int) -> Image.Image:
        """Decode sample ``index`` as RGB; a file PIL cannot read raises naming the file."""
        path = self.samples[index][0]
        try:
            with Image.open(path) as img:
                return img.convert("RGB")
        except (OSError, SyntaxError, ValueError) as err:
            raise DataError(f"cannot read image '{path}': {err} (set data.verify_images=skip to leave unreadable "
                            "files out, or =error to find them all before training)") from err

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.load_image(index)
        if self.transform is not None:
            image = self.transform(image)
        return image, self.samples[index][1]


def list_class_folders(root: str | Path) -> list[str]:
    """Sorted names of the class sub-folders of an ImageFolder tree.

    Raises:
        DataError: If the folder is missing or has no class folders.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset folder '{root}' does not exist")
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DataError(f"dataset folder '{root}' has no class sub-folders (expected <root>/<class>/<image>)")
    return folders


def scan_image_folder(root: str | Path, folders: Sequence[str]) -> list[tuple[str, int]]:
    """``(path, label)`` for every image under ``root/<folders[label]>/``, sorted for determinism.

    Raises:
        DataError: Naming the first class folder that holds no image.
    """
    root = Path(root)
    samples: list[tuple[str, int]] = []
    for label, folder in enumerate(folders):
        files = sorted(p for p in (root / folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files:
            raise DataError(f"class folder '{root / folder}' holds no image")
        samples.extend((str(p), label) for p in files)
    return samples


def read_csv_samples(path: str | Path, num_classes: int) -> list[tuple[str, int]]:
    """Read a ``path,label`` CSV (header optional; relative paths are relative to the CSV's folder).

    Raises:
        DataError: Missing file, a malformed row, or a label outside ``[0, num_classes)`` (names the line).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"CSV file '{path}' does not exist")
    samples = []
    with path.open(newline="") as f:
        for lineno, row in enumerate(csv.reader(f), start=1):
            if not row or (lineno == 1 and row[-1].strip().lower() == "label"):
                continue
            if len(row) != 2:
                raise DataError(f"{path}:{lineno}: expected 'path,label', got {row}")
            file, label = row[0].strip(), row[1].strip()
            try:
                label_int = int(label)
            except ValueError as err:
                raise DataError(f"{path}:{lineno}: label '{label}' is not an integer") from err
            if not 0 <= label_int < num_classes:
                raise DataError(f"{path}:{lineno}: label {label_int} is outside [0, {num_classes})")
            file_path = Path(file) if Path(file).is_absolute() else path.parent / file
            samples.append((str(file_path), label_int))
    if not samples:
        raise DataError(f"CSV file '{path}' lists no sample")
    return samples
