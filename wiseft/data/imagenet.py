"""ImageNet and its natural distribution shifts as dataset kinds, each read in the layout its public release ships.

=====================  =============================================================  ============================
kind                   release layout under ``root``                                  classes
=====================  =============================================================  ============================
``imagenet``           ``<wnid>/*.JPEG`` (train, or val sorted into wnid folders)     1000
``imagenet_v2``        ``<0..999>/*.jpeg`` (matched-frequency; folder = class index)  1000
``imagenet_sketch``    ``<wnid>/*.JPEG``                                              1000
``imagenet_r``         ``<wnid>/*.jpg``                                               200 (logits restricted)
``imagenet_a``         ``<wnid>/*.jpg``                                               200 (logits restricted)
``objectnet``          ``<folder>/*.png`` (``objectnet-1.0/images``)                  113 (ImageNet logits pooled)
=====================  =============================================================  ============================

The ImageNet-1k class order (sorted WordNet ids) and the ImageNet-A/-R subsets come from timm's ImageNet metadata;
class display names and prompts from open_clip's; the ObjectNet mapping from ``metadata/objectnet_to_imagenet.json``.
Every kind needs an ImageNet-1k reference (1000 classes in that order) for its projection.
"""

from __future__ import annotations

import functools
import json
import logging
import pkgutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import open_clip
from PIL import Image
from timm.data import ImageNetInfo, infer_imagenet_subset

from wiseft.config.schema import DatasetSpec
from wiseft.data.datasets import scan_image_folder
from wiseft.data.projection import ClassProjection
from wiseft.data.registry import DatasetKind, register_dataset_kind
from wiseft.errors import ConfigError, DataError

log = logging.getLogger(__name__)

NUM_IMAGENET_CLASSES = 1000
METADATA_DIR = Path(__file__).parent / "metadata"
OBJECTNET_MAPPING_FILE = METADATA_DIR / "objectnet_to_imagenet.json"

#: Image counts of the public releases (ImageNet-1k ILSVRC-2012 train/val, ImageNetV2 matched-frequency,
#: ImageNet-Sketch, ImageNet-R, ImageNet-A, and ObjectNet 1.0 restricted to the 113 ImageNet-overlapping classes).
PUBLIC_IMAGE_COUNTS: dict[str, int] = {
    "imagenet_train": 1_281_167,
    "imagenet_val": 50_000,
    "imagenet_v2": 10_000,
    "imagenet_sketch": 50_889,
    "imagenet_r": 30_000,
    "imagenet_a": 7_500,
    "objectnet": 18_574,
}


@functools.cache
def imagenet_wnids() -> tuple[str, ...]:
    """ImageNet-1k's WordNet ids in class-index order (timm's ``ImageNetInfo``)."""
    subset = infer_imagenet_subset({"num_classes": NUM_IMAGENET_CLASSES})
    return tuple(ImageNetInfo(subset).label_names())


def imagenet_classnames() -> list[str]:
    """Display names of the 1000 classes in index order (open_clip's, as used for CLIP's zero-shot prompts)."""
    return list(open_clip.IMAGENET_CLASSNAMES)


def _timm_info_lines(filename: str) -> list[str]:
    data = pkgutil.get_data("timm.data", f"_info/{filename}")
    if data is None:
        raise RuntimeError(f"timm does not ship _info/{filename}")
    return [line.strip() for line in data.decode("utf-8").splitlines() if line.strip()]


@functools.cache
def imagenet_subset(name: str) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """The 200-class subset of ImageNet-A (``"a"``) or ImageNet-R (``"r"``) as shipped by timm.

    Returns:
        ``(wnids, indices)``: the subset's WordNet ids in label order and their ImageNet-1k class indices.

    Raises:
        RuntimeError: If timm's synset and index lists disagree with each other or with ImageNet-1k.
    """
    if name not in ("a", "r"):
        raise ValueError(f"unknown ImageNet subset '{name}' (known: a, r)")
    wnids = tuple(_timm_info_lines(f"imagenet_{name}_synsets.txt"))
    indices = tuple(int(i) for i in _timm_info_lines(f"imagenet_{name}_indices.txt"))
    all_wnids = imagenet_wnids()
    if len(wnids) != len(indices) or any(all_wnids[i] != w for w, i in zip(wnids, indices, strict=False)):
        raise RuntimeError(f"timm's imagenet_{name}_synsets.txt and imagenet_{name}_indices.txt disagree")
    return wnids, indices


@dataclass(frozen=True)
class ObjectNetClass:
    """One ObjectNet class that overlaps ImageNet.

    Attributes:
        folder: Its folder in ``objectnet-1.0/images``.
        name: Its display name.
        imagenet_indices: ImageNet-1k classes whose logits are max-pooled into it.
    """

    folder: str
    name: str
    imagenet_indices: tuple[int, ...]


@functools.cache
def objectnet_classes() -> tuple[ObjectNetClass, ...]:
    """The 113 ObjectNet classes that map to ImageNet, sorted by folder name (their label order)."""
    doc = json.loads(OBJECTNET_MAPPING_FILE.read_text())
    index = {w: i for i, w in enumerate(imagenet_wnids())}
    classes = []
    for entry in doc["classes"]:
        unknown = [w for w in entry["imagenet_wnids"] if w not in index]
        if unknown:
            raise RuntimeError(f"{OBJECTNET_MAPPING_FILE}: '{entry['folder']}' maps to {unknown[0]}, which is not an "
                               "ImageNet-1k class")
        classes.append(ObjectNetClass(entry["folder"], entry["name"],
                                      tuple(index[w] for w in entry["imagenet_wnids"])))
    return tuple(sorted(classes, key=lambda c: c.folder))


def count_report(release: str, found: int, expected: int) -> tuple[int, str]:
    """Compare a dataset's image count with its public release's.

    Returns:
        ``(logging level, message)``: INFO for a complete copy, WARNING for a partial (or padded) one, whose
        accuracies are not comparable with published numbers.
    """
    if found == expected:
        return logging.INFO, f"{release}: {found:,} images, as in the public release"
    what = "a partial copy" if found < expected else "more than the public release"
    return logging.WARNING, (f"{release}: {found:,} images found, the public release has {expected:,} ({what}); "
                             "accuracies will not be comparable with published numbers")


class BorderCrop:
    """Crop ``pixels`` from every side of a PIL image (ObjectNet's images carry a 2-pixel red border).

    A class rather than a closure so that DataLoader workers can pickle it.
    """

    def __init__(self, pixels: int = 2) -> None:
        """Args:
        pixels: Width of the border to remove.
        """
        self.pixels = pixels

    def __call__(self, image: Image.Image) -> Image.Image:
        width, height = image.size
        p = self.pixels
        if width <= 2 * p or height <= 2 * p:
            raise DataError(f"image of size {width}x{height} is too small to crop a {p}-pixel border")
        return image.crop((p, p, width - p, height - p))

    def __repr__(self) -> str:
        return f"BorderCrop(pixels={self.pixels})"


class ReleaseKind(DatasetKind):
    """A dataset whose class folders are fixed by its public release.

    Subclasses set ``release`` (display name), ``layout`` (for error messages) and ``public_count`` (a key of
    :data:`PUBLIC_IMAGE_COUNTS`) and implement :meth:`expected_folders`, :meth:`default_classnames` and
    :meth:`reference_projection`.
    """

    release = ""
    layout = ""
    public_count = ""

    def expected_folders(self, spec: DatasetSpec) -> list[str]:
        """Class folder names in label order."""
        raise NotImplementedError

    def default_classnames(self, spec: DatasetSpec) -> list[str]:
        """Display names in label order."""
        raise NotImplementedError

    def reference_projection(self, spec: DatasetSpec) -> ClassProjection | None:
        """Projection from ImageNet-1k logits onto this dataset's classes."""
        raise NotImplementedError

    def release_name(self, spec: DatasetSpec) -> str:
        """Name used in messages."""
        return self.release

    def count_key(self, spec: DatasetSpec) -> str:
        """Key of the public image count in :data:`PUBLIC_IMAGE_COUNTS`."""
        return self.public_count

    def folders(self, spec: DatasetSpec) -> list[str]:
        """The release's class folders, after checking every one of them exists under the root.

        Raises:
            DataError: The root or some class folders are missing (lists them and the expected layout).
        """
        root = self.root(spec)
        expected = self.expected_folders(spec)
        name = self.release_name(spec)
        if not root.is_dir():
            raise DataError(f"{name}: folder '{root}' does not exist; expected {self.layout} (a shift can be "
                            "switched off with data.shifts.<name>.enabled=false)")
        present = {p.name for p in root.iterdir() if p.is_dir()}
        missing = [f for f in expected if f not in present]
        if missing:
            shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
            raise DataError(f"{name}: {len(missing)} of {len(expected)} class folders are missing under '{root}' "
                            f"({shown}); expected {self.layout}")
        return expected

    def classnames(self, spec: DatasetSpec) -> list[str]:
        folders = self.folders(spec)
        if spec.classnames is None:
            return self.default_classnames(spec)
        if len(spec.classnames) != len(folders):
            raise ConfigError(f"classnames: {len(spec.classnames)} names given for the {len(folders)} classes of "
                              f"{self.release_name(spec)}")
        return list(spec.classnames)

    def samples(self, spec: DatasetSpec) -> list[tuple[str, int]]:
        samples = scan_image_folder(self.root(spec), self.folders(spec))
        level, message = count_report(f"{self.release_name(spec)} at '{self.root(spec)}'", len(samples),
                                      PUBLIC_IMAGE_COUNTS[self.count_key(spec)])
        log.log(level, message)
        return samples

    def projection(self, spec: DatasetSpec, reference_classnames: Sequence[str]) -> ClassProjection | None:
        self.folders(spec)  # layout errors first: they are the user's most likely problem
        if len(reference_classnames) != NUM_IMAGENET_CLASSES:
            raise ConfigError(f"{self.release_name(spec)} is labelled with ImageNet-1k classes: the reference must be "
                              f"ImageNet (1000 classes in ImageNet order), it has {len(reference_classnames)}")
        return self.reference_projection(spec)


class _FullImageNetKind(ReleaseKind):
    """A dataset labelled with all 1000 ImageNet-1k classes, in their order."""

    def expected_folders(self, spec: DatasetSpec) -> list[str]:
        return list(imagenet_wnids())

    def default_classnames(self, spec: DatasetSpec) -> list[str]:
        return imagenet_classnames()

    def reference_projection(self, spec: DatasetSpec) -> ClassProjection | None:
        return None


@register_dataset_kind("imagenet")
class ImageNetKind(_FullImageNetKind):
    """ImageNet-1k: ``root`` holds the 1000 wnid folders of one split; ``options.split`` is ``train`` or ``val``."""

    layout = ("<root>/<wnid>/<image>.JPEG with the 1000 ImageNet-1k wnid folders (n01440764 ... n15075141); "
              "the val split sorted into the same wnid folders")

    def _split(self, spec: DatasetSpec) -> str:
        split = spec.options.get("split", "val")
        if split not in ("train", "val"):
            raise ConfigError(f"options.split: ImageNet splits are 'train' and 'val', got '{split}'")
        return split

    def release_name(self, spec: DatasetSpec) -> str:
        return f"ImageNet {self._split(spec)}"

    def count_key(self, spec: DatasetSpec) -> str:
        return f"imagenet_{self._split(spec)}"


@register_dataset_kind("imagenet_v2")
class ImageNetV2Kind(_FullImageNetKind):
    """ImageNetV2 matched-frequency: folders ``0`` ... ``999`` named by class index (not sorted as strings)."""

    release = "ImageNet-V2"
    layout = ("<root>/<class index 0..999>/<image>.jpeg, as imagenetv2-matched-frequency.tar.gz extracts "
              "(imagenetv2-matched-frequency-format-val/)")
    public_count = "imagenet_v2"

    def expected_folders(self, spec: DatasetSpec) -> list[str]:
        return [str(i) for i in range(NUM_IMAGENET_CLASSES)]


@register_dataset_kind("imagenet_sketch")
class ImageNetSketchKind(_FullImageNetKind):
    """ImageNet-Sketch: the 1000 wnid folders."""

    release = "ImageNet-Sketch"
    layout = "<root>/<wnid>/<image>.JPEG with the 1000 ImageNet-1k wnid folders, as the release extracts (sketch/)"
    public_count = "imagenet_sketch"


class _SubsetKind(ReleaseKind):
    subset = ""

    def expected_folders(self, spec: DatasetSpec) -> list[str]:
        return list(imagenet_subset(self.subset)[0])

    def default_classnames(self, spec: DatasetSpec) -> list[str]:
        names = imagenet_classnames()
        return [names[i] for i in imagenet_subset(self.subset)[1]]

    def reference_projection(self, spec: DatasetSpec) -> ClassProjection:
        return ClassProjection.subset(imagenet_subset(self.subset)[1], NUM_IMAGENET_CLASSES)


@register_dataset_kind("imagenet_r")
class ImageNetRKind(_SubsetKind):
    """ImageNet-R (renditions): 200 wnid folders; logits restricted to those classes."""

    subset = "r"
    release = "ImageNet-R"
    layout = "<root>/<wnid>/<image>.jpg with ImageNet-R's 200 wnid folders, as imagenet-r.tar extracts (imagenet-r/)"
    public_count = "imagenet_r"


@register_dataset_kind("imagenet_a")
class ImageNetAKind(_SubsetKind):
    """ImageNet-A (natural adversarial examples): 200 wnid folders; logits restricted to those classes."""

    subset = "a"
    release = "ImageNet-A"
    layout = "<root>/<wnid>/<image>.jpg with ImageNet-A's 200 wnid folders, as imagenet-a.tar extracts (imagenet-a/)"
    public_count = "imagenet_a"


@register_dataset_kind("objectnet")
class ObjectNetKind(ReleaseKind):
    """ObjectNet 1.0: the 113 class folders that map to ImageNet (the others are ignored).

    Each class max-pools the logits of its ImageNet classes. The release's images carry a 2-pixel red border,
    cropped (``options.border``, default 2) on the decoded image, before the model's resize and crop.
    """

    release = "ObjectNet"
    layout = ("<root>/<class folder>/<image>.png with ObjectNet's 113 ImageNet-overlapping class folders "
              "(alarm_clock, backpack, ...), as objectnet-1.0.zip extracts (objectnet-1.0/images/)")
    public_count = "objectnet"

    def expected_folders(self, spec: DatasetSpec) -> list[str]:
        return [c.folder for c in objectnet_classes()]

    def default_classnames(self, spec: DatasetSpec) -> list[str]:
        return [c.name.lower() for c in objectnet_classes()]

    def reference_projection(self, spec: DatasetSpec) -> ClassProjection:
        return ClassProjection.many_to_one([c.imagenet_indices for c in objectnet_classes()], NUM_IMAGENET_CLASSES)

    def pre_transform(self, spec: DatasetSpec) -> Callable | None:
        pixels = int(spec.options.get("border", 2))
        if pixels < 0:
            raise ConfigError(f"options.border: must be >= 0, got {pixels}")
        return BorderCrop(pixels) if pixels else None
