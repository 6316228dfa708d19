"""A picture grid of the toy world: one image per class (columns) for every domain (rows).

``python -m wiseft.toy.gallery --out docs/toy_domains.png`` draws the first image of each class of each domain of
world seed 0, exactly the bytes that ``ensure_world`` writes (the same random streams), without generating the world.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from wiseft.io.atomic import atomic_write
from wiseft.toy.domains import sampler
from wiseft.toy.vocab import CLASSNAMES
from wiseft.toy.world import _image_rng

#: Rows of the grid: (domain, split, label shown), in the paper's order (pretraining data, reference, shifts).
ROWS: tuple[tuple[str, str | None, str], ...] = (
    ("web", None, "web (pretraining)"),
    ("reference", "train", "reference (photo)"),
    ("v2", None, "v2"),
    ("sketch", None, "sketch"),
    ("rendition", None, "rendition"),
    ("objectnet", None, "objectnet"),
    ("hard", None, "hard"),
)


def domain_images(seed: int = 0) -> list[list[np.ndarray]]:
    """The first image of each class (index ``i`` has label ``i``) of every row in :data:`ROWS`."""
    grid = []
    for domain, split, _ in ROWS:
        sample = sampler(domain)
        grid.append([sample(_image_rng(seed, domain, split, i), i)[0] for i in range(len(CLASSNAMES))])
    return grid


def draw_gallery(out: str | Path, seed: int = 0) -> Path:
    """Draw the grid to ``out`` (PNG, written atomically).

    Args:
        out: Destination image.
        seed: World seed.

    Returns:
        ``out``.
    """
    grid = domain_images(seed)
    # A bare Figure (no pyplot): no global state, no backend to choose.
    fig = Figure(figsize=(1.1 * len(CLASSNAMES) + 1.2, 1.1 * len(ROWS)))
    axes = fig.subplots(len(ROWS), len(CLASSNAMES))
    for r, (row, (_, _, label)) in enumerate(zip(grid, ROWS, strict=True)):
        for c, img in enumerate(row):
            ax = axes[r, c]
            ax.imshow(img, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(CLASSNAMES[c], fontsize=9)
            if c == 0:
                ax.set_ylabel(label, fontsize=9, rotation=0, ha="right", va="center")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    return out


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m wiseft.toy.gallery --out toy_domains.png``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/toy_domains.png", help="output PNG (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="world seed (default: %(default)s)")
    args = parser.parse_args(argv)
    print(draw_gallery(args.out, args.seed))


if __name__ == "__main__":
    main()
