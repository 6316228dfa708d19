"""ImageNet and its shifts on generated miniature copies of each release's layout."""

from __future__ import annotations

import csv
import logging
import shutil
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from torch.utils.data import DataLoader
from torchvision.transforms import ToTensor

from tests.conftest import compose_cfg
from tests.imagenet_trees import (
    BORDER_RGB,
    INTERIOR_RGB,
    LAYOUTS,
    OBJECTNET_UNMAPPED,
    bordered_image,
    folders_for,
    make_imagenet_trees,
    make_release_tree,
)
from wiseft.config.schema import DatasetSpec, to_settings
from wiseft.data.datamodule import WiSEFTDataModule
from wiseft.data.imagenet import (
    PUBLIC_IMAGE_COUNTS,
    BorderCrop,
    count_report,
    imagenet_classnames,
    imagenet_subset,
    imagenet_wnids,
    objectnet_classes,
)
from wiseft.data.projection import project_logits
from wiseft.data.registry import build_dataset, get_kind
from wiseft.errors import ConfigError, DataError
from wiseft.sweep.evaluate import correct_counts

SHIFTS = ("imagenet_v2", "imagenet_r", "imagenet_sketch", "objectnet", "imagenet_a")
ROOT_OF = {kind: sub for sub, (kind, _) in LAYOUTS.items() if kind != "imagenet"}


@pytest.fixture(scope="module")
def trees(tmp_path_factory) -> Path:
    return make_imagenet_trees(tmp_path_factory.mktemp("imagenet_data"))


def _dataset(trees: Path, kind: str, transform=None):
    sub = "imagenet/val" if kind == "imagenet" else ROOT_OF[kind]
    spec = DatasetSpec(kind=kind, root=str(trees / sub), options={"split": "val"} if kind == "imagenet" else {})
    return build_dataset(spec, transform, imagenet_classnames())


def _imagenet_cfg(trees: Path, extra: list[str] | None = None):
    return compose_cfg(["model=tiny_random", "data=imagenet", f"paths.data_dir={trees}", "~experiment",
                        *(extra or [])], trees / "out")


# --- class lists --------------------------------------------------------------------------------------------------


def test_class_lists_come_from_timm_and_open_clip():
    assert len(imagenet_wnids()) == 1000 and imagenet_wnids()[0] == "n01440764"  # tench
    assert len(imagenet_classnames()) == 1000 and imagenet_classnames()[0] == "tench"
    for subset, first_wnid, first_index in (("r", "n01443537", 1), ("a", "n01498041", 6)):
        wnids, indices = imagenet_subset(subset)
        assert len(wnids) == len(set(wnids)) == 200
        assert (wnids[0], indices[0]) == (first_wnid, first_index)  # goldfish, stingray
        assert [imagenet_wnids().index(w) for w in wnids] == list(indices)


def test_objectnet_mapping_has_113_classes_of_imagenet_ids():
    classes = objectnet_classes()
    assert len(classes) == 113
    assert len({c.folder for c in classes}) == 113
    ids = [i for c in classes for i in c.imagenet_indices]
    assert len(ids) == len(set(ids)) == 125
    assert all(0 <= i < 1000 for i in ids)
    by_folder = {c.folder: c for c in classes}
    names = imagenet_classnames()
    assert [names[i] for i in by_folder["alarm_clock"].imagenet_indices] == ["analog clock", "digital clock"]
    assert by_folder["bicycle"].imagenet_indices == (671, 444)  # mountain bike, tandem bicycle
    assert [names[i] for i in by_folder["still_camera"].imagenet_indices] == ["Polaroid camera", "reflex camera"]
    assert "squeegee" not in by_folder  # one of the 200 classes without an ImageNet counterpart


# --- layouts ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["imagenet", *SHIFTS])
def test_every_layout_reads_with_release_labels(trees, kind):
    dataset = _dataset(trees, kind)
    folders = folders_for(kind)
    assert len(dataset) == len(folders) == len(dataset.classnames)
    for path, label in dataset.samples:
        assert Path(path).parent.name == folders[label]
    if kind == "objectnet":
        assert not any(Path(p).parent.name in OBJECTNET_UNMAPPED for p, _ in dataset.samples)


def test_imagenet_v2_labels_are_folder_numbers_not_string_order(trees):
    dataset = _dataset(trees, "imagenet_v2")
    labels = {Path(p).parent.name: label for p, label in dataset.samples}
    assert labels["10"] == 10 and labels["2"] == 2 and labels["999"] == 999
    assert dataset.projection is None and dataset.classnames == imagenet_classnames()


# --- scoring through the projection ------------------------------------------------------------------------------


def _expected_groups(kind: str) -> list[set[int]]:
    """Per label, the ImageNet classes that count as correct, derived from folder names (not the projection)."""
    if kind == "objectnet":
        import json

        from wiseft.data.imagenet import OBJECTNET_MAPPING_FILE

        doc = {c["folder"]: c["imagenet_wnids"] for c in json.loads(OBJECTNET_MAPPING_FILE.read_text())["classes"]}
        return [{imagenet_wnids().index(w) for w in doc[f]} for f in folders_for(kind)]
    return [{imagenet_wnids().index(f)} for f in folders_for(kind)]


class _Picks(torch.nn.Module):
    """A model whose logits always pick ImageNet class ``k`` (the others get distinct, lower logits)."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.logits = -torch.arange(1000, dtype=torch.float32) / 1000
        self.logits[k] = 10.0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(len(images), -1)


@pytest.mark.parametrize("kind", ["imagenet_r", "imagenet_a", "objectnet"])
def test_prediction_of_class_k_is_correct_exactly_when_k_maps_to_the_label(trees, kind):
    dataset = _dataset(trees, kind)
    groups = _expected_groups(kind)
    mapped = sorted(set().union(*groups))
    # Every mapped ImageNet class k: the projected prediction is the label whose group holds k, and only that one.
    logits = torch.stack([_Picks(k).logits for k in mapped])
    predicted = project_logits(logits, dataset.projection).argmax(dim=-1).tolist()
    for k, label in zip(mapped, predicted, strict=True):
        assert [j for j, g in enumerate(groups) if k in g] == [label], k
    # And through the evaluation path (loader, dataset projection, counts) for a few k.
    dataset.transform = lambda image: torch.zeros(1)
    loader = DataLoader(dataset, batch_size=64)
    labels = [label for _, label in dataset.samples]
    for k in (mapped[0], mapped[len(mapped) // 2], mapped[-1]):
        correct, total = correct_counts(_Picks(k), loader)
        assert total == len(dataset)
        assert correct == sum(k in groups[y] for y in labels) == 1  # one image per class in the tree


def test_shifts_need_an_imagenet_reference(trees):
    spec = DatasetSpec(kind="imagenet_r", root=str(trees / "imagenet-r"))
    with pytest.raises(ConfigError, match="the reference must be ImageNet"):
        get_kind(spec, "data.shifts.imagenet_r").projection(spec, ["cat", "dog"])


# --- ObjectNet's border -------------------------------------------------------------------------------------------


def test_objectnet_border_is_cropped_before_the_model_transform(trees):
    seen = []

    def model_transform(image):
        seen.append(image)
        return ToTensor()(image)

    dataset = _dataset(trees, "objectnet", model_transform)
    tensor, _ = dataset[0]
    image = np.asarray(seen[0])
    assert image.shape == (12, 12, 3)  # the 16x16 file minus 2 pixels on every side
    assert (image == INTERIOR_RGB).all()  # no red left
    assert tensor.shape == (3, 12, 12)
    raw = np.asarray(bordered_image(16))
    assert (raw[0] == BORDER_RGB).all() and (raw[:, 1] == BORDER_RGB).all()
    # The other shifts keep their full images.
    assert get_kind(DatasetSpec(kind="imagenet_r", root="x"), "x").pre_transform(DatasetSpec(root="x")) is None


def test_border_crop_options():
    image = bordered_image(16, border=3)
    assert BorderCrop(3)(image).size == (10, 10)
    spec = DatasetSpec(kind="objectnet", root="x", options={"border": 0})
    assert get_kind(spec, "s").pre_transform(spec) is None
    with pytest.raises(DataError, match="too small"):
        BorderCrop(2)(bordered_image(4, border=1))


# --- sanity checks: missing folders, partial copies -------------------------------------------------------------


def test_missing_class_folders_fail_listing_them_and_the_layout(tmp_path):
    root = make_release_tree(tmp_path / "imagenet-r", "imagenet_r", ".jpg")
    wnids = folders_for("imagenet_r")
    for wnid in wnids[:3]:
        shutil.rmtree(root / wnid)
    spec = DatasetSpec(kind="imagenet_r", root=str(root))
    with pytest.raises(DataError) as err:
        get_kind(spec, "data.shifts.imagenet_r").classnames(spec)
    message = str(err.value)
    assert "3 of 200 class folders are missing" in message and ", ".join(wnids[:3]) in message
    assert "expected <root>/<wnid>/<image>.jpg with ImageNet-R's 200 wnid folders" in message
    spec = DatasetSpec(kind="objectnet", root=str(tmp_path / "objectnet-1.0" / "images"))
    with pytest.raises(DataError, match=r"ObjectNet: folder '.*objectnet-1.0/images' does not exist; expected "
                                        r"<root>/<class folder>/<image>.png"):
        get_kind(spec, "data.shifts.objectnet").classnames(spec)


def test_imagenet_config_fails_at_check_naming_the_missing_shift(trees, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(trees, data, ignore=shutil.ignore_patterns("imagenet-a"))
    dm = WiSEFTDataModule(to_settings(_imagenet_cfg(data)).data)
    with pytest.raises(DataError, match=r"data.shifts.imagenet_a: ImageNet-A: folder '.*imagenet-a' does not exist"):
        dm.check()
    # Switched off, the missing shift is simply not evaluated.
    settings = to_settings(_imagenet_cfg(data, ["data.shifts.imagenet_a.enabled=false"]))
    dm = WiSEFTDataModule(settings.data)
    assert dm.check() == imagenet_classnames()
    dm.setup()
    assert [s.name for s in dm.eval_sets] == ["imagenet_val", "imagenet", *[s for s in SHIFTS if s != "imagenet_a"]]


def test_count_report_flags_partial_copies():
    assert count_report("ImageNet-R", 30_000, PUBLIC_IMAGE_COUNTS["imagenet_r"])[0] == logging.INFO
    level, message = count_report("ImageNet-R", 200, 30_000)
    assert level == logging.WARNING and "200 images found, the public release has 30,000 (a partial copy)" in message
    assert "more than the public release" in count_report("x", 10, 5)[1]
    assert PUBLIC_IMAGE_COUNTS == {"imagenet_train": 1_281_167, "imagenet_val": 50_000, "imagenet_v2": 10_000,
                                   "imagenet_sketch": 50_889, "imagenet_r": 30_000, "imagenet_a": 7_500,
                                   "objectnet": 18_574}


def test_scanning_a_partial_copy_warns(trees, caplog):
    with caplog.at_level(logging.INFO, logger="wiseft.data.imagenet"):
        _dataset(trees, "objectnet")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "113 images found, the public release has 18,574 (a partial copy)" in warnings[0]


# --- data=imagenet and user datasets ------------------------------------------------------------------------------


def test_imagenet_config_composes_reference_and_five_shifts(trees):
    settings = to_settings(_imagenet_cfg(trees))
    data = settings.data
    assert data.reference.train.kind == "imagenet" and data.reference.test.options == {"split": "val"}
    assert data.reference.val is None and data.reference.val_fraction == 0.01
    assert list(data.shifts) == list(SHIFTS)
    assert data.templates == "openai_imagenet"
    for name, spec in data.shifts.items():
        assert spec.kind == name and spec.enabled
        assert Path(spec.root) == trees / ROOT_OF[name]


def test_user_dataset_with_its_own_class_names_next_to_imagenet(trees, tmp_path):
    images = tmp_path / "mine"
    images.mkdir()
    src = next((trees / "imagenet-r" / "n01443537").iterdir())
    rows = []
    for i, label in enumerate((0, 1, 1)):
        shutil.copy(src, images / f"{i}.jpg")
        rows.append((f"mine/{i}.jpg", label))
    with (tmp_path / "mine.csv").open("w", newline="") as f:
        csv.writer(f).writerows([("path", "label"), *rows])
    shift = f"+data.shifts.mine={{kind: csv, root: {tmp_path / 'mine.csv'}, classnames: [goldfish, tench]}}"
    settings = to_settings(_imagenet_cfg(trees, [shift]))
    dm = WiSEFTDataModule(settings.data)
    dm.check()
    dm.setup()
    mine = next(s.dataset for s in dm.eval_sets if s.name == "mine")
    assert mine.classnames == ["goldfish", "tench"] and mine.projection.groups == ((1,), (0,))
    # A name open_clip's ImageNet list uses twice cannot be matched to one class.
    ambiguous = f"+data.shifts.mine={{kind: csv, root: {tmp_path / 'mine.csv'}, classnames: [sunglasses, tench]}}"
    with pytest.raises(ConfigError, match="'sunglasses' names several reference classes"):
        WiSEFTDataModule(to_settings(_imagenet_cfg(trees, [ambiguous])).data).check()
    assert open_clip.IMAGENET_CLASSNAMES.count("sunglasses") == 2
