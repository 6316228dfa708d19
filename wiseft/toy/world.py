"""The toy world on disk: deterministic generation, caching and the ImageFolder layout.

``ensure_world(root, seed, scale, domains)`` returns ``root/<world_id>/``, where each domain is generated the first
time it is asked for::

    world.json                      manifest (id, seed, scale, counts, class names, templates)
    reference/{train,val,test}/<class>/*.png
    v2/<class>/*.png   sketch/...   rendition/...   objectnet/...   hard/...
    web/images/*.png   web/captions.jsonl     ({"file": "images/000000.png", "caption": "..."} per line)

Class folders are named by ``CLASSNAMES``, which is sorted, so ImageFolder's label ``i`` is ``CLASSNAMES[i]``.

Every image has its own random stream ``(seed, domain, split, index)``, so the bytes do not depend on how work is
split between processes. The ``world_id`` contains a fingerprint of the generator's code (its syntax trees, so
comments, docstrings and formatting do not count), so any change to the generator or its parameters gets a fresh
directory instead of a stale cache.
"""

from __future__ import annotations

import ast
import hashlib
import json
import logging
import multiprocessing as mp
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

from wiseft.toy import domains as _domains
from wiseft.toy.domains import SHIFT_DOMAINS, sampler
from wiseft.toy.vocab import CLASSNAMES, TEMPLATES

__all__ = [
    "CLASSNAMES",
    "DOMAINS",
    "LABELLED_DOMAINS",
    "SHIFT_DOMAINS",
    "SPLIT_SIZES",
    "TEMPLATES",
    "default_root",
    "ensure_world",
    "world_id",
]

log = logging.getLogger(__name__)

#: Bump when the on-disk format changes (source changes are caught by the fingerprint anyway).
GENERATOR_VERSION = 1

#: Images per (domain, split) at ``scale=1``; every count is a multiple of the 10 classes.
SPLIT_SIZES: dict[tuple[str, str | None], int] = {
    ("reference", "train"): 6000,
    ("reference", "val"): 1000,
    ("reference", "test"): 2000,
    **{(d, None): 1000 for d in SHIFT_DOMAINS},
    ("web", None): 30000,
}

#: The labelled domains (ImageFolder trees) that fine-tuning and evaluation read.
LABELLED_DOMAINS: tuple[str, ...] = ("reference", *SHIFT_DOMAINS)
#: Every domain of a world: the labelled ones and the captioned web corpus that pretraining reads.
DOMAINS: tuple[str, ...] = (*LABELLED_DOMAINS, "web")

# Stable integer ids for random streams (never reorder; append only).
_STREAM_IDS = {"web": 1, "reference": 2, "v2": 3, "sketch": 4, "rendition": 5, "objectnet": 6, "hard": 7}
_SPLIT_IDS = {None: 0, "train": 1, "val": 2, "test": 3}
# v2 is "a re-sample of the reference process with a different seed": its streams are offset like a new seed.
_SEED_OFFSETS = {"v2": 1_000_003}

_MIN_PER_CLASS = 2
_PARALLEL_THRESHOLD = 2000
_SOURCE_MODULES = ("vocab.py", "shapes.py", "render.py", "styles.py", "domains.py", "world.py")


def _code_digest(source: str) -> str:
    """The syntax tree of a module without docstrings: code changes count, comments/docstrings/formatting do not."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree, annotate_fields=False, include_attributes=False)


@cache
def _fingerprint() -> str:
    # ast.dump can differ between Python versions; that only costs a regeneration of identical images.
    h = hashlib.sha256(f"v{GENERATOR_VERSION}".encode())
    here = Path(_domains.__file__).parent
    for name in _SOURCE_MODULES:
        h.update(_code_digest((here / name).read_text(encoding="utf-8")).encode())
    return h.hexdigest()[:10]


def default_root() -> Path:
    """Default cache directory of toy worlds: ``$WISEFT_DATA_DIR/toy``, else ``~/.cache/wiseft/data/toy``.

    The same folder as the training job's ``${paths.data_dir}/toy``, so the tools and the job share one cache.
    """
    return Path(os.environ.get("WISEFT_DATA_DIR", "~/.cache/wiseft/data")).expanduser() / "toy"


def world_id(seed: int = 0, scale: float = 1.0) -> str:
    """Directory name of a world: generator version, seed, scale and a fingerprint of the generator code.

    Args:
        seed: World seed.
        scale: Multiplier of all image counts.

    Returns:
        For example ``toyworld-v1-s0-x1-3f2a9c01de``.
    """
    return f"toyworld-v{GENERATOR_VERSION}-s{seed}-x{scale:g}-{_fingerprint()}"


def split_counts(scale: float) -> dict[tuple[str, str | None], int]:
    """Images per (domain, split) at a scale: rounded to whole classes, at least ``_MIN_PER_CLASS`` per class."""
    n = len(CLASSNAMES)
    return {k: n * max(_MIN_PER_CLASS, round(v * scale / n)) for k, v in SPLIT_SIZES.items()}


@dataclass(frozen=True)
class _Chunk:
    out: str
    seed: int
    domain: str
    split: str | None
    start: int
    stop: int


def _rel_dir(domain: str, split: str | None) -> Path:
    return Path(domain) / split if split else Path(domain)


def _image_rng(seed: int, domain: str, split: str | None, index: int) -> np.random.Generator:
    return np.random.default_rng([seed + _SEED_OFFSETS.get(domain, 0), _STREAM_IDS[domain], _SPLIT_IDS[split], index])


def _render_chunk(chunk: _Chunk) -> list[tuple[int, str]]:
    """Render and save one chunk of images; returns ``(index, caption)`` for captioned (web) images."""
    sample = sampler(chunk.domain)
    base = Path(chunk.out) / _rel_dir(chunk.domain, chunk.split)
    captions = []
    for i in range(chunk.start, chunk.stop):
        label = i % len(CLASSNAMES)
        img, caption = sample(_image_rng(chunk.seed, chunk.domain, chunk.split, i), label)
        if caption is None:
            path = base / CLASSNAMES[label] / f"{i:06d}.png"
        else:
            path = base / "images" / f"{i:06d}.png"
            captions.append((i, caption))
        Image.fromarray(img).save(path, format="PNG", compress_level=6)
    return captions


def _chunks(out: Path, seed: int, counts: dict[tuple[str, str | None], int], size: int = 500) -> Iterator[_Chunk]:
    for (domain, split), n in counts.items():
        for start in range(0, n, size):
            yield _Chunk(str(out), seed, domain, split, start, min(n, start + size))


def _make_dirs(out: Path, counts: dict[tuple[str, str | None], int]) -> None:
    for domain, split in counts:
        base = out / _rel_dir(domain, split)
        if domain == "web":
            (base / "images").mkdir(parents=True)
        else:
            for name in CLASSNAMES:
                (base / name).mkdir(parents=True)


def _manifest(seed: int, scale: float) -> str:
    manifest = {
        "world_id": world_id(seed, scale),
        "seed": seed,
        "scale": scale,
        "generator_version": GENERATOR_VERSION,
        "classnames": list(CLASSNAMES),
        "templates": list(TEMPLATES),
        "counts": {"/".join(filter(None, k)): v for k, v in split_counts(scale).items()},
    }
    return json.dumps(manifest, indent=2) + "\n"


def _check_domains(domains: tuple[str, ...]) -> None:
    unknown = [d for d in domains if d not in DOMAINS]
    if unknown:
        raise ValueError(f"unknown toy-world domain(s) {unknown}; known: {', '.join(DOMAINS)}")


def generate_world(
    out: str | Path,
    seed: int = 0,
    scale: float = 1.0,
    workers: int | None = None,
    domains: tuple[str, ...] = DOMAINS,
) -> Path:
    """Generate (some domains of) a world into a new directory (no caching, not atomic; see :func:`ensure_world`).

    Args:
        out: Directory to create; must not exist.
        seed: World seed.
        scale: Multiplier of all image counts.
        workers: Processes to use; default up to 8 CPU cores, and 1 for small worlds.
        domains: Domains to render (the images of a domain do not depend on which others are rendered).

    Returns:
        ``out``.
    """
    _check_domains(domains)
    out = Path(out)
    counts = {k: v for k, v in split_counts(scale).items() if k[0] in domains}
    out.mkdir(parents=True)
    _make_dirs(out, counts)
    chunks = list(_chunks(out, seed, counts))
    total = sum(counts.values())
    if workers is None:
        workers = 1 if total < _PARALLEL_THRESHOLD else min(8, os.cpu_count() or 1)
    start = time.perf_counter()
    if workers > 1:
        # fork: no re-import of __main__ (a training script without a main guard would re-run). The children only
        # use numpy and PIL, so forking a process that already runs torch threads is harmless here.
        method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        with mp.get_context(method).Pool(workers) as pool:
            results = pool.map(_render_chunk, chunks, chunksize=1)
    else:
        results = [_render_chunk(c) for c in chunks]
    if "web" in domains:
        captions = sorted(c for r in results for c in r)
        with open(out / "web" / "captions.jsonl", "w", encoding="utf-8") as f:
            for i, caption in captions:
                f.write(json.dumps({"file": f"images/{i:06d}.png", "caption": caption}) + "\n")
    (out / "world.json").write_text(_manifest(seed, scale), encoding="utf-8")
    log.info(
        "generated %d toy-world images (%s) in %.1fs (%d workers) at %s",
        total,
        ", ".join(domains),
        time.perf_counter() - start,
        workers,
        out,
    )
    return out


def ensure_world(
    root: str | Path,
    seed: int = 0,
    scale: float = 1.0,
    workers: int | None = None,
    domains: tuple[str, ...] = DOMAINS,
) -> Path:
    """Return the world directory ``root/<world_id>/``, generating the requested domains first if they are missing.

    Domains are generated on demand (fine-tuning needs only the labelled ones, pretraining only ``web``). Each is
    rendered into a private temporary directory and renamed into place, so a domain directory is either complete
    or absent; when two processes race, the loser discards its copy and uses the winner's.

    Args:
        root: Cache directory for worlds.
        seed: World seed (same seed, same bytes).
        scale: Multiplier of all image counts (for example 0.02 in tests).
        workers: Generation processes (see :func:`generate_world`).
        domains: Domains that must be present; default all (``LABELLED_DOMAINS`` for fine-tuning).

    Returns:
        Path of the world directory.
    """
    _check_domains(domains)
    final = Path(root).expanduser() / world_id(seed, scale)
    missing = tuple(d for d in domains if not (final / d).is_dir())
    if not missing and (final / "world.json").is_file():
        return final
    final.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=final))
    try:
        generate_world(tmp / "world", seed, scale, workers, missing)
        for domain in missing:
            try:
                os.rename(tmp / "world" / domain, final / domain)
            except OSError:
                # Someone else finished first (the target exists and is not empty): theirs is identical, use it.
                if not (final / domain).is_dir():
                    raise
                log.info("toy domain %s/%s was generated concurrently; using the existing copy", final.name, domain)
        # Replacing a file is atomic, and a concurrent writer's manifest is identical.
        os.replace(tmp / "world" / "world.json", final / "world.json")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
