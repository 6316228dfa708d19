"""Rasterisation primitives of the toy world: a supersampled canvas, backgrounds, fills, strokes and clutter.

Images are composed in float RGB in ``[0, 1]`` on a canvas ``SUPERSAMPLE`` times the output size (anti-aliasing for
free when it is box-downsampled), then finished at the output size (blur, sensor noise) and quantised to ``uint8``.
Masks are drawn with PIL (fast polygon fill and thick lines); colour arithmetic is numpy.
"""

from __future__ import annotations

import colorsys
from functools import cache
from itertools import pairwise

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from wiseft.toy.shapes import Pose, ShapeGeometry, wobble

#: Output image side in pixels.
IMAGE_SIZE = 32
#: Canvas supersampling factor.
SUPERSAMPLE = 4
#: Canvas side in pixels.
CANVAS = IMAGE_SIZE * SUPERSAMPLE


@cache
def _grid() -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:CANVAS, 0:CANVAS].astype(np.float32)
    return xs, ys


def hsv(h: float, s: float, v: float) -> np.ndarray:
    """An RGB colour (float32, ``[0, 1]``) from HSV components (hue wraps around)."""
    return np.asarray(colorsys.hsv_to_rgb(h % 1.0, float(np.clip(s, 0, 1)), float(np.clip(v, 0, 1))), np.float32)


def background(
    rng: np.random.Generator,
    colour: np.ndarray,
    *,
    gradient: float = 0.0,
    texture: float = 0.0,
    texture_cells: int = 4,
) -> np.ndarray:
    """A background: a colour with an optional linear brightness gradient and low-frequency texture.

    Args:
        rng: Random generator.
        colour: Base RGB colour.
        gradient: Peak relative brightness change of a random linear gradient.
        texture: Amplitude of per-channel smooth noise.
        texture_cells: Coarseness of the texture (grid cells across the canvas).

    Returns:
        ``(CANVAS, CANVAS, 3)`` float32 image.
    """
    # Backgrounds are smooth, so they are computed at the output size and upsampled (nearest) to the canvas.
    n = IMAGE_SIZE
    img = np.empty((n, n, 3), np.float32)
    img[:] = colour
    if gradient:
        ys, xs = np.mgrid[0:n, 0:n].astype(np.float32)
        a = rng.uniform(0, 2 * np.pi)
        ramp = ((xs - n / 2) * np.cos(a) + (ys - n / 2) * np.sin(a)) / (n / 2)
        img *= (1 + gradient * ramp)[..., None]
    if texture:
        coarse = rng.uniform(-1, 1, size=(texture_cells, texture_cells)).astype(np.float32)
        lum = np.asarray(Image.fromarray(coarse, mode="F").resize((n, n), Image.BICUBIC))[..., None]
        tint = rng.normal(0, 0.3, size=3).astype(np.float32)
        img += texture * lum * (1 + tint)
    return img.repeat(SUPERSAMPLE, axis=0).repeat(SUPERSAMPLE, axis=1)


def shape_mask(
    geom: ShapeGeometry, pose: Pose, *, wobble_rng: np.random.Generator | None = None, wobble_amount: float = 0.0
) -> np.ndarray:
    """Filled mask of a posed shape (holes cut out), float32 in ``{0, 1}`` at canvas resolution."""
    img = Image.new("L", (CANVAS, CANVAS), 0)
    draw = ImageDraw.Draw(img)
    for polys, value in ((geom.outer, 255), (geom.holes, 0)):
        for poly in polys:
            pts = wobble(wobble_rng, poly, wobble_amount) if wobble_rng is not None and wobble_amount else poly
            draw.polygon([tuple(p) for p in pose.apply(pts)], fill=value)
    return np.asarray(img, dtype=np.float32) / 255.0


def outline_mask(
    geom: ShapeGeometry,
    pose: Pose,
    width: float,
    *,
    rng: np.random.Generator | None = None,
    wobble_amount: float = 0.0,
    strokes: int = 1,
    gap_prob: float = 0.0,
) -> np.ndarray:
    """Stroked outline of a posed shape (holes' outlines too), optionally hand-drawn.

    Args:
        geom: Shape geometry.
        pose: Placement.
        width: Stroke width in canvas pixels.
        rng: Random generator (needed for wobble, multiple strokes and gaps).
        wobble_amount: Hand-drawn displacement in unit-frame units.
        strokes: How many overlapping, independently wobbled strokes (sketchy double lines).
        gap_prob: Probability that each short segment of the stroke is left out (broken pencil lines).

    Returns:
        ``(CANVAS, CANVAS)`` float32 mask.
    """
    img = Image.new("L", (CANVAS, CANVAS), 0)
    draw = ImageDraw.Draw(img)
    w = max(1, round(width))
    for poly in (*geom.outer, *geom.holes):
        for _ in range(strokes):
            pts = wobble(rng, poly, wobble_amount) if rng is not None and wobble_amount else poly
            xy = pose.apply(pts)
            xy = np.concatenate([xy, xy[:1]], axis=0)
            if gap_prob and rng is not None:
                for a, b in pairwise(xy):
                    if rng.random() >= gap_prob:
                        draw.line([tuple(a), tuple(b)], fill=255, width=w)
            else:
                draw.line([tuple(p) for p in xy], fill=255, width=w, joint="curve")
    return np.asarray(img, dtype=np.float32) / 255.0


Box = tuple[slice, slice]

#: The whole canvas as a box.
FULL: Box = (slice(0, CANVAS), slice(0, CANVAS))


def mask_box(mask: np.ndarray) -> Box | None:
    """Bounding box of the non-zero part of a mask (``None`` if it is empty)."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def fill_field(
    rng: np.random.Generator,
    colour: np.ndarray,
    pose: Pose,
    *,
    shading: float = 0.0,
    pattern: str | None = None,
    pattern_colour: np.ndarray | None = None,
    box: Box | None = None,
) -> np.ndarray:
    """Colour field of an object's fill: a colour with directional shading and an optional pattern.

    Args:
        rng: Random generator.
        colour: Base RGB colour.
        pose: The object's placement (shading and patterns are relative to it).
        shading: Relative brightness change across the object (a light source from a random side).
        pattern: ``"striped"``, ``"dotted"``, ``"checkered"`` or ``None``.
        pattern_colour: Second colour of the pattern.
        box: Compute only this part of the canvas (the object's bounding box); the whole canvas if ``None``.

    Returns:
        ``(h, w, 3)`` float32 colour field over ``box`` (only meaningful under the object's mask).
    """
    xs, ys = _grid()
    box = box or FULL
    u = (xs[box] - pose.cx) / max(pose.radius, 1.0)
    v = (ys[box] - pose.cy) / max(pose.radius, 1.0)
    field = np.empty((*u.shape, 3), np.float32)
    field[:] = colour
    if pattern is not None:
        second = pattern_colour if pattern_colour is not None else 1.0 - colour
        a = rng.uniform(0, np.pi)
        ru, rv = u * np.cos(a) + v * np.sin(a), -u * np.sin(a) + v * np.cos(a)
        if pattern == "striped":
            on = np.sin(ru * 2 * np.pi * 2.2) > 0
        elif pattern == "dotted":
            on = (np.sin(ru * 2 * np.pi * 1.8) * np.sin(rv * 2 * np.pi * 1.8)) > 0.45
        elif pattern == "checkered":
            on = (np.sin(ru * 2 * np.pi * 1.6) * np.sin(rv * 2 * np.pi * 1.6)) > 0
        else:
            raise ValueError(f"unknown pattern {pattern!r}")
        field[on] = second
    if shading:
        a = rng.uniform(0, 2 * np.pi)
        field *= (1 - shading * np.clip(u * np.cos(a) + v * np.sin(a), -1.2, 1.2))[..., None]
    return field


def composite(img: np.ndarray, mask: np.ndarray, colour: np.ndarray, box: Box | None = None) -> np.ndarray:
    """Alpha-composite a colour (or colour field) over ``img`` through ``mask``, in place.

    Only the mask's bounding box is touched, which makes small objects cheap.

    Args:
        img: ``(CANVAS, CANVAS, 3)`` float image, modified in place.
        mask: ``(CANVAS, CANVAS)`` alpha in ``[0, 1]``.
        colour: An RGB colour ``(3,)``, or a colour field over ``box`` (``(h, w, 3)``; the whole canvas if
            ``box`` is ``None``).
        box: The mask's bounding box (see :func:`mask_box`), if already known.

    Returns:
        ``img``.
    """
    if colour.ndim == 3:
        if box is None:
            box = FULL
    else:
        box = box or mask_box(mask)
    if box is None:
        return img
    m = mask[box][..., None]
    img[box] += m * (colour - img[box])
    return img


def distractor_mask(rng: np.random.Generator, kind: str, *, size: float, avoid: Pose | None = None) -> np.ndarray:
    """A non-class clutter item: an irregular blob, a straight bar or a squiggle.

    None of these is a class shape (blobs are irregular, bars are single strokes), so clutter never adds evidence
    for another class, only noise.

    Args:
        rng: Random generator.
        kind: ``"blob"``, ``"bar"`` or ``"squiggle"``.
        size: Typical extent in canvas pixels.
        avoid: If given, the item's centre is kept away from this pose's centre (so the object stays visible).

    Returns:
        ``(CANVAS, CANVAS)`` float32 mask.
    """
    for _ in range(8):
        cx, cy = rng.uniform(0, CANVAS, size=2)
        if avoid is None or np.hypot(cx - avoid.cx, cy - avoid.cy) > 0.9 * avoid.radius + 0.5 * size:
            break
    img = Image.new("L", (CANVAS, CANVAS), 0)
    draw = ImageDraw.Draw(img)
    if kind == "blob":
        n = int(rng.integers(7, 11))
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        radii = size * rng.uniform(0.35, 1.0, n)
        pts = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], axis=1)
        draw.polygon([tuple(p) for p in pts], fill=255)
    elif kind == "bar":
        a = rng.uniform(0, np.pi)
        half = size * rng.uniform(0.8, 1.6)
        d = np.array([np.cos(a), np.sin(a)]) * half
        draw.line([(cx - d[0], cy - d[1]), (cx + d[0], cy + d[1])], fill=255, width=max(2, round(size * 0.25)))
    elif kind == "squiggle":
        n = 6
        steps = rng.normal(0, size * 0.5, size=(n, 2))
        pts = np.array([cx, cy]) + np.cumsum(steps, axis=0)
        draw.line([tuple(p) for p in pts], fill=255, width=max(2, round(size * 0.15)), joint="curve")
    else:
        raise ValueError(f"unknown distractor kind {kind!r}")
    return np.asarray(img, dtype=np.float32) / 255.0


def finish(
    rng: np.random.Generator,
    img: np.ndarray,
    *,
    blur: float = 0.0,
    noise: float = 0.0,
    contrast: float = 1.0,
) -> np.ndarray:
    """Downsample the canvas to the output size and apply camera effects.

    Args:
        rng: Random generator.
        img: ``(CANVAS, CANVAS, 3)`` float image.
        blur: Gaussian blur radius in output pixels (0 for none).
        noise: Standard deviation of additive Gaussian noise (in ``[0, 1]`` units).
        contrast: Global contrast around the mean (below 1 washes the image out).

    Returns:
        ``(IMAGE_SIZE, IMAGE_SIZE, 3)`` uint8 image.
    """
    # Box filter: sum canvas rows in groups first (contiguous, fast), then columns within each row.
    n, k = IMAGE_SIZE, SUPERSAMPLE
    rows = img.reshape(n, k, CANVAS * 3).sum(axis=1)
    small = rows.reshape(n, n, k, 3).sum(axis=2) * np.float32(1.0 / (k * k))
    if contrast != 1.0:
        small = (small - small.mean()) * contrast + small.mean()
    if blur > 0:
        pil = Image.fromarray((np.clip(small, 0, 1) * 255 + 0.5).astype(np.uint8))
        small = np.asarray(pil.filter(ImageFilter.GaussianBlur(blur)), dtype=np.float32) / 255.0
    if noise > 0:
        small = small + rng.normal(0, noise, size=small.shape).astype(np.float32)
    return (np.clip(small, 0, 1) * 255 + 0.5).astype(np.uint8)
