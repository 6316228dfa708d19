"""The procedural toy world: determinism, domain design, on-disk layout and caching."""

from __future__ import annotations

import colorsys
import hashlib
import json
import multiprocessing as mp
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wiseft.toy.domains import CLASS_HUES, SHIFT_DOMAINS, sampler
from wiseft.toy.vocab import CLASSNAMES, TEMPLATES
from wiseft.toy.world import LABELLED_DOMAINS, ensure_world, generate_world, split_counts, world_id

EVAL_DIRS = ["reference/train", "reference/val", "reference/test", *SHIFT_DOMAINS]


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _samples(domain: str, n: int = 100, seed: int = 123) -> list[tuple[np.ndarray, int]]:
    sample = sampler(domain)
    return [(sample(np.random.default_rng([seed, i]), i % 10)[0], i % 10) for i in range(n)]


def _border_hue_class(img: np.ndarray) -> int:
    """The class whose reference-background hue is closest to the median colour of the image border."""
    border = (
        np.concatenate(
            [img[:2].reshape(-1, 3), img[-2:].reshape(-1, 3), img[:, :2].reshape(-1, 3), img[:, -2:].reshape(-1, 3)]
        )
        / 255.0
    )
    hue = colorsys.rgb_to_hsv(*np.median(border, axis=0))[0]
    return int(np.argmin(np.abs((np.asarray(CLASS_HUES) - hue + 0.5) % 1 - 0.5)))


def test_classnames_are_sorted_so_imagefolder_labels_match() -> None:
    assert list(CLASSNAMES) == sorted(CLASSNAMES) and len(CLASSNAMES) == 10
    assert all("{}" in t for t in TEMPLATES)


@pytest.mark.parametrize("domain", ["web", "reference", *SHIFT_DOMAINS])
def test_samples_are_deterministic_32px_rgb(domain: str) -> None:
    sample = sampler(domain)
    a, cap_a = sample(np.random.default_rng([0, 7]), 3)
    b, cap_b = sample(np.random.default_rng([0, 7]), 3)
    c, _ = sample(np.random.default_rng([1, 7]), 3)
    assert a.shape == (32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and cap_a == cap_b
    assert not np.array_equal(a, c)
    assert (cap_a is not None) == (domain == "web")


def test_world_bytes_depend_only_on_the_seed(tmp_path: Path) -> None:
    a = _digest(generate_world(tmp_path / "a", seed=0, scale=0.01))
    b = _digest(generate_world(tmp_path / "b", seed=0, scale=0.01, workers=2))
    c = _digest(generate_world(tmp_path / "c", seed=1, scale=0.01))
    assert a == b
    assert a.keys() == c.keys()
    images = [k for k in a if k.endswith(".png")]
    assert sum(a[k] != c[k] for k in images) > 0.95 * len(images)


def test_reference_background_goes_with_the_class_and_shifts_break_it() -> None:
    def match_rate(domain: str) -> float:
        return float(np.mean([_border_hue_class(img) == y for img, y in _samples(domain)]))

    assert match_rate("reference") > 0.45  # shortcut 0.6 (chance 0.1)
    assert match_rate("v2") > 0.4
    assert match_rate("objectnet") < 0.3
    assert match_rate("hard") < 0.1  # misleading: another class's background


def test_sketches_are_dark_strokes_on_light_paper_and_renditions_have_outlines() -> None:
    def fraction(domain: str, pick) -> float:
        return float(np.mean([pick(img).mean() for img, _ in _samples(domain, 50)]))

    bright = lambda img: img.min(axis=2) > 200  # noqa: E731
    dark = lambda img: img.max(axis=2) < 50  # noqa: E731
    assert fraction("sketch", bright) > 0.7
    assert fraction("reference", bright) < 0.05
    assert fraction("rendition", dark) > 0.03
    assert fraction("reference", dark) < 0.01


def test_layout_matches_the_contract(tiny_world: Path, tiny_scale: float) -> None:
    counts = split_counts(tiny_scale)
    assert tiny_world.name == world_id(0, tiny_scale)
    for rel in EVAL_DIRS:
        folder = tiny_world / rel
        assert sorted(p.name for p in folder.iterdir()) == list(CLASSNAMES)
        domain, _, split = rel.partition("/")
        files = list(folder.rglob("*.png"))
        assert len(files) == counts[(domain, split or None)]
        per_class = {name: len(list((folder / name).glob("*.png"))) for name in CLASSNAMES}
        assert len(set(per_class.values())) == 1, per_class
    rows = [json.loads(line) for line in (tiny_world / "web" / "captions.jsonl").read_text().splitlines()]
    assert len(rows) == counts[("web", None)]
    for row in rows:
        assert set(row) == {"file", "caption"}
        assert (tiny_world / "web" / row["file"]).is_file()
        assert any(name in row["caption"].split() for name in CLASSNAMES), row
    with Image.open(next((tiny_world / "reference" / "train" / "star").glob("*.png"))) as img:
        assert img.size == (32, 32) and img.mode == "RGB"
    manifest = json.loads((tiny_world / "world.json").read_text())
    assert manifest["world_id"] == tiny_world.name and manifest["classnames"] == list(CLASSNAMES)


def test_captions_mostly_name_style_and_shape_not_colour(tiny_world: Path) -> None:
    from wiseft.toy.vocab import COLOURS

    lines = (tiny_world / "web" / "captions.jsonl").read_text().splitlines()
    captions = [json.loads(line)["caption"] for line in lines]
    with_colour = np.mean([any(w in COLOURS for w in c.split()) for c in captions])
    assert with_colour < 0.2
    assert {"sketch", "cartoon", "photo", "cluttered"} <= {w for c in captions for w in c.split()}


def test_ensure_world_is_idempotent(tiny_world: Path, tiny_scale: float) -> None:
    stamp = (tiny_world / "world.json").stat().st_mtime_ns
    again = ensure_world(tiny_world.parent, seed=0, scale=tiny_scale)
    assert again == tiny_world
    assert (tiny_world / "world.json").stat().st_mtime_ns == stamp
    assert not [p for p in (*tiny_world.parent.iterdir(), *tiny_world.iterdir()) if p.name.startswith(".tmp-")]


def test_domains_are_generated_on_demand_with_the_same_bytes(tmp_path: Path) -> None:
    world = ensure_world(tmp_path / "lazy", seed=0, scale=0.01, domains=LABELLED_DOMAINS)
    assert sorted(p.name for p in world.iterdir()) == sorted([*LABELLED_DOMAINS, "world.json"])
    stamp = (world / "sketch").stat().st_mtime_ns
    assert ensure_world(tmp_path / "lazy", seed=0, scale=0.01, domains=("web",)) == world
    assert (world / "sketch").stat().st_mtime_ns == stamp  # present domains are not regenerated
    full = generate_world(tmp_path / "full", seed=0, scale=0.01)
    assert _digest(world) == _digest(full)


def test_unknown_domain_is_refused_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'skech'"):
        ensure_world(tmp_path, seed=0, scale=0.01, domains=("skech",))
    assert not list(tmp_path.iterdir())


def test_world_id_encodes_seed_scale_and_version() -> None:
    ids = {world_id(0, 1.0), world_id(1, 1.0), world_id(0, 0.5)}
    assert len(ids) == 3
    assert world_id(0, 1.0).startswith("toyworld-v")
    assert world_id(3, 0.02) == world_id(3, 0.02)


def _race(root: str, queue) -> None:
    queue.put(str(ensure_world(root, seed=5, scale=0.005, workers=1)))


def test_concurrent_generation_is_safe(tmp_path: Path) -> None:
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_race, args=(str(tmp_path), queue)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    paths = {queue.get(timeout=5) for _ in procs}
    assert len(paths) == 1
    assert [p.name for p in tmp_path.iterdir()] == [Path(paths.pop()).name]


def test_fingerprint_ignores_docstrings_and_comments_but_not_code() -> None:
    from wiseft.toy.world import _code_digest

    base = _code_digest("x = 1\ndef f():\n    return 2\n")
    assert _code_digest('"""Module."""\nx = 1  # one\n\n\ndef f():\n    """Doc."""\n    return 2\n') == base
    assert _code_digest("x = 1\ndef f():\n    return 3\n") != base


def test_gallery_shows_the_worlds_own_images(tiny_world: Path, tmp_path: Path) -> None:
    from wiseft.toy.gallery import ROWS, domain_images, draw_gallery

    grid = domain_images(seed=0)
    for (domain, split, _), row in zip(ROWS, grid, strict=True):
        for label, img in enumerate(row):
            folder = tiny_world / _rel(domain, split) / ("images" if domain == "web" else CLASSNAMES[label])
            path = folder / f"{label:06d}.png"
            assert np.array_equal(np.asarray(Image.open(path)), img), path
    out = draw_gallery(tmp_path / "grid.png")
    with Image.open(out) as png:
        assert png.width > 800 and png.height > 500


def _rel(domain: str, split: str | None) -> Path:
    return Path(domain) / split if split else Path(domain)
