"""Dataset kinds: how a :class:`~wiseft.config.schema.DatasetSpec` becomes a dataset.

A kind is registered by name with :func:`register_dataset_kind`; the config says ``kind: <name>``. Kinds
split their work so that problems surface early and cheaply: ``prepare`` may download or generate (run once,
on one process), ``classnames`` only lists folders and so validates the layout, ``samples`` scans the files.
"""

from __future__ import annotations

import importlib
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from torchvision.transforms import Compose

from wiseft.config.schema import DatasetSpec
from wiseft.data.datasets import LabeledImageDataset, list_class_folders, read_csv_samples, scan_image_folder
from wiseft.data.projection import ClassProjection
from wiseft.errors import ConfigError, DataError


class DatasetKind:
    """Base class of dataset kinds; the default behaviour is an ImageFolder tree at ``spec.root``."""

    def prepare(self, spec: DatasetSpec) -> None:
        """Download or generate the data if the kind can (default: nothing)."""

    def root(self, spec: DatasetSpec) -> Path:
        """Folder that holds the class folders."""
        return Path(spec.root).expanduser()

    def folders(self, spec: DatasetSpec) -> list[str]:
        """Class folder names in label order."""
        return list_class_folders(self.root(spec))

    def classnames(self, spec: DatasetSpec) -> list[str]:
        """Display names in label order: ``spec.classnames`` if given, else the folder names."""
        folders = self.folders(spec)
        if spec.classnames is None:
            return folders
        if len(spec.classnames) != len(folders):
            raise ConfigError(f"classnames: {len(spec.classnames)} names given for {len(folders)} class folders "
                              f"in '{self.root(spec)}'")
        return list(spec.classnames)

    def samples(self, spec: DatasetSpec) -> list[tuple[str, int]]:
        """``(path, label)`` of every sample."""
        return scan_image_folder(self.root(spec), self.folders(spec))

    def projection(self, spec: DatasetSpec, reference_classnames: Sequence[str]) -> ClassProjection | None:
        """How reference logits map onto this dataset's classes; by default matched by class name."""
        return projection_by_name(self.classnames(spec), reference_classnames, spec.class_map)

    def pre_transform(self, spec: DatasetSpec) -> Callable | None:
        """A fix applied to the decoded image before the model's transform (e.g. a border crop)."""
        return None


class CsvKind(DatasetKind):
    """``root`` is a CSV of ``path,label`` rows; ``classnames`` is required."""

    def prepare(self, spec: DatasetSpec) -> None:
        if not Path(spec.root).expanduser().is_file():
            raise DataError(f"CSV file '{spec.root}' does not exist")

    def folders(self, spec: DatasetSpec) -> list[str]:
        if not spec.classnames:
            raise ConfigError(f"classnames: a csv dataset ('{spec.root}') needs its class names in the config")
        return list(spec.classnames)

    def samples(self, spec: DatasetSpec) -> list[tuple[str, int]]:
        return read_csv_samples(Path(spec.root).expanduser(), len(self.folders(spec)))


DATASET_KINDS: dict[str, DatasetKind] = {}

#: Kinds defined in their own modules, imported on first use so that importing the package stays light.
BUILTIN_KIND_MODULES: dict[str, str] = {
    "toy": "wiseft.data.toy",
    **dict.fromkeys(("imagenet", "imagenet_v2", "imagenet_sketch", "imagenet_r", "imagenet_a", "objectnet"),
                    "wiseft.data.imagenet"),
}


def register_dataset_kind(name: str) -> Callable[[type[DatasetKind]], type[DatasetKind]]:
    """Class decorator that registers a :class:`DatasetKind` under ``name``."""

    def decorator(cls: type[DatasetKind]) -> type[DatasetKind]:
        DATASET_KINDS[name] = cls()
        return cls

    return decorator


register_dataset_kind("imagefolder")(DatasetKind)
register_dataset_kind("csv")(CsvKind)


def get_kind(spec: DatasetSpec, where: str) -> DatasetKind:
    """Look up the kind of ``spec``; ``where`` names the config key for the error."""
    if spec.kind not in DATASET_KINDS and spec.kind in BUILTIN_KIND_MODULES:
        importlib.import_module(BUILTIN_KIND_MODULES[spec.kind])
    if spec.kind not in DATASET_KINDS:
        known = ", ".join(sorted({*DATASET_KINDS, *BUILTIN_KIND_MODULES}))
        raise ConfigError(f"{where}.kind: unknown dataset kind '{spec.kind}' (known: {known})")
    return DATASET_KINDS[spec.kind]


def projection_by_name(
    classnames: Sequence[str],
    reference_classnames: Sequence[str],
    class_map: dict[str, list[str]] | None = None,
) -> ClassProjection | None:
    """Derive a projection from class names.

    Args:
        classnames: The evaluation set's class names.
        reference_classnames: The reference (model) class names.
        class_map: Optional many-to-one map, target class -> reference class names.

    Returns:
        ``None`` when the classes equal the reference's, else a subset or many-to-one projection.

    Raises:
        ConfigError: A class that is not a reference class (names it).
    """
    index = {name: i for i, name in enumerate(reference_classnames)}
    # A name the reference uses twice (open_clip's ImageNet names repeat 'missile' and 'sunglasses') cannot say
    # which class is meant.
    ambiguous = {name for name, count in Counter(reference_classnames).items() if count > 1}
    if class_map is not None:
        groups = []
        for name in classnames:
            if name not in class_map:
                raise ConfigError(f"class_map: class '{name}' has no entry")
            missing = [r for r in class_map[name] if r not in index]
            if missing:
                raise ConfigError(f"class_map: '{name}' maps to '{missing[0]}', which is not a reference class")
            _check_unambiguous(class_map[name], ambiguous)
            groups.append([index[r] for r in class_map[name]])
        return ClassProjection.many_to_one(groups, len(reference_classnames))
    if list(classnames) == list(reference_classnames):
        return None
    missing = [c for c in classnames if c not in index]
    if missing:
        raise ConfigError(f"classes {missing[:3]} are not reference classes; an evaluation set's classes must be a "
                          "subset of the reference classes (or give a class_map)")
    _check_unambiguous(classnames, ambiguous)
    return ClassProjection.subset([index[c] for c in classnames], len(reference_classnames))


def _check_unambiguous(names: Sequence[str], ambiguous: set[str]) -> None:
    clash = [n for n in names if n in ambiguous]
    if clash:
        raise ConfigError(f"class '{clash[0]}' names several reference classes; give the reference distinct names "
                          "(data.reference.train.classnames) or use a dataset kind that maps classes by index")


def build_dataset(
    spec: DatasetSpec,
    transform: Callable | None,
    reference_classnames: Sequence[str] | None,
    samples: Sequence[tuple[str, int]] | None = None,
    where: str = "data",
) -> LabeledImageDataset:
    """Build the dataset described by ``spec``.

    Args:
        spec: What and where.
        transform: The model's preprocessing.
        reference_classnames: Reference classes for the projection; ``None`` for the reference itself.
        samples: Use these samples instead of scanning (e.g. a held-out split of the training set).
        where: Config key of ``spec``, for error messages.
    """
    kind = get_kind(spec, where)
    classnames = kind.classnames(spec)
    projection = None if reference_classnames is None else kind.projection(spec, reference_classnames)
    pre = kind.pre_transform(spec)
    if pre is not None:
        transform = pre if transform is None else Compose([pre, transform])
    return LabeledImageDataset(kind.samples(spec) if samples is None else samples, classnames, transform, projection)
