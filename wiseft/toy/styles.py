"""Depiction styles of the toy world: photo-like, sketch and cartoon renderers with their knobs.

A style turns ``(rng, class name)`` into an image plus a :class:`Meta` record (colour and pattern actually used) from
which the web corpus writes captions. Domains (``wiseft.toy.domains``) are parameterisations of these styles.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from wiseft.toy.render import (
    CANVAS,
    FULL,
    SUPERSAMPLE,
    background,
    composite,
    distractor_mask,
    fill_field,
    finish,
    hsv,
    mask_box,
    outline_mask,
    shape_mask,
)
from wiseft.toy.shapes import Pose, geometry
from wiseft.toy.vocab import COLOURS, PATTERNS

Range = tuple[float, float]


@dataclass
class Meta:
    """What was drawn, for captions.

    Attributes:
        colour: Named colour of the object's fill (``None`` if the style has no meaningful fill colour).
        pattern: Named fill pattern, if any.
        small: Whether the object is small in the frame.
    """

    colour: str | None = None
    pattern: str | None = None
    small: bool = False


def named_colour(rng: np.random.Generator, name: str) -> np.ndarray:
    """A random RGB colour that a caption can call ``name``."""
    hue = COLOURS[name]
    if hue is not None:
        return hsv(hue + rng.uniform(-0.03, 0.03), rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.0))
    if name == "white":
        return hsv(0, rng.uniform(0, 0.08), rng.uniform(0.88, 1.0))
    if name == "black":
        return hsv(0, rng.uniform(0, 0.1), rng.uniform(0.03, 0.18))
    return hsv(0, rng.uniform(0, 0.06), rng.uniform(0.4, 0.62))


def random_colour_name(rng: np.random.Generator) -> str:
    """A colour name, uniformly over the palette."""
    names = list(COLOURS)
    return names[int(rng.integers(len(names)))]


def _pose(
    rng: np.random.Generator,
    radius: Range,
    *,
    rotation: float,
    stretch: Range = (1.0, 1.0),
    shear: float = 0.0,
    margin: float = 0.9,
) -> Pose:
    """Sample a pose with the radius in output pixels; the centre keeps ``margin * radius`` inside the frame."""
    r = rng.uniform(*radius) * SUPERSAMPLE
    lo, hi = margin * r, CANVAS - margin * r
    cx, cy = rng.uniform(lo, hi, size=2) if hi > lo else (CANVAS / 2, CANVAS / 2)
    s = rng.uniform(*stretch)
    sx, sy = (s, 1.0) if rng.random() < 0.5 else (1.0, s)
    return Pose(
        cx=float(cx),
        cy=float(cy),
        radius=r,
        angle=float(rng.uniform(-rotation, rotation)),
        stretch=(sx, sy),
        shear=float(rng.uniform(-shear, shear)),
    )


@dataclass
class PhotoStyle:
    """A photo-like scene: a shaded object on a textured background, with optional clutter and camera effects.

    Attributes:
        radius: Object radius range in output pixels.
        rotation: Maximum absolute rotation (radians).
        stretch: Anisotropic stretch range (odd poses); ``(1, 1)`` for none.
        shear: Maximum absolute shear.
        margin: How much of the object must stay inside the frame (1 = all of it, < 1 lets it be cut off).
        contrast: Range of the object's colour contrast against the background (1 = its full colour).
        bg_saturation: Background saturation range.
        bg_value: Background brightness range.
        texture: Background texture amplitude range.
        distractors: Inclusive range of the number of clutter items.
        distractor_size: Clutter item size range in output pixels.
        occluders: Inclusive range of the number of bars drawn over the object.
        pattern_prob: Probability of a patterned fill.
        shading: Object shading range.
        noise: Sensor noise range.
        blur: Blur radius range (output pixels).
        blur_prob: Probability of blurring at all.
    """

    radius: Range = (8.0, 13.0)
    rotation: float = np.pi
    stretch: Range = (1.0, 1.0)
    shear: float = 0.0
    margin: float = 1.0
    contrast: Range = (0.8, 1.0)
    bg_saturation: Range = (0.1, 0.6)
    bg_value: Range = (0.2, 0.9)
    texture: Range = (0.0, 0.12)
    distractors: tuple[int, int] = (0, 0)
    distractor_size: Range = (3.0, 6.0)
    occluders: tuple[int, int] = (0, 0)
    pattern_prob: float = 0.1
    shading: Range = (0.05, 0.3)
    noise: Range = (0.0, 0.03)
    blur: Range = (0.0, 0.0)
    blur_prob: float = 0.0

    def render(self, rng: np.random.Generator, cls: str, bg_hue: float | None = None) -> tuple[np.ndarray, Meta]:
        """Render one image.

        Args:
            rng: Random generator.
            cls: Class name.
            bg_hue: Background hue; random when ``None``.

        Returns:
            The ``uint8`` image and what was drawn.
        """
        hue = rng.uniform() if bg_hue is None else bg_hue
        bg_col = hsv(hue, rng.uniform(*self.bg_saturation), rng.uniform(*self.bg_value))
        img = background(rng, bg_col, gradient=rng.uniform(0, 0.25), texture=rng.uniform(*self.texture))

        pose = _pose(
            rng, self.radius, rotation=self.rotation, stretch=self.stretch, shear=self.shear, margin=self.margin
        )
        for _ in range(int(rng.integers(self.distractors[0], self.distractors[1] + 1))):
            kind = ("blob", "bar", "squiggle")[int(rng.integers(3))]
            size = rng.uniform(*self.distractor_size) * SUPERSAMPLE
            col = _contrasted(rng, named_colour(rng, random_colour_name(rng)), bg_col, self.contrast)
            img = composite(img, distractor_mask(rng, kind, size=size, avoid=pose), col)

        colour = random_colour_name(rng)
        obj_col = _contrasted(rng, named_colour(rng, colour), bg_col, self.contrast)
        pattern = PATTERNS[int(rng.integers(len(PATTERNS)))] if rng.random() < self.pattern_prob else None
        pat_col = _contrasted(rng, named_colour(rng, random_colour_name(rng)), bg_col, self.contrast)
        mask = shape_mask(geometry(cls), pose)
        box = mask_box(mask) or FULL
        fill = fill_field(
            rng, obj_col, pose, shading=rng.uniform(*self.shading), pattern=pattern, pattern_colour=pat_col, box=box
        )
        img = composite(img, mask, fill, box)

        for _ in range(int(rng.integers(self.occluders[0], self.occluders[1] + 1))):
            col = _contrasted(rng, named_colour(rng, random_colour_name(rng)), bg_col, self.contrast)
            img = composite(img, _occluder(rng, pose), col)

        blur = rng.uniform(*self.blur) if rng.random() < self.blur_prob else 0.0
        out = finish(rng, img, blur=blur, noise=rng.uniform(*self.noise))
        return out, Meta(colour=colour, pattern=pattern, small=pose.radius < 7 * SUPERSAMPLE)


def _contrasted(rng: np.random.Generator, colour: np.ndarray, bg: np.ndarray, contrast: Range) -> np.ndarray:
    """Pull ``colour`` towards ``bg`` (low contrast), but keep it distinguishable from the background."""
    c = rng.uniform(*contrast)
    out = bg + c * (colour - bg)
    diff = out - bg
    norm = float(np.linalg.norm(diff))
    floor = 0.12
    if norm < floor:
        # Nearly invisible object: push it along its difference (or brightness) to a minimal visible contrast.
        direction = diff / norm if norm > 1e-6 else np.full(3, 1.0 if bg.mean() < 0.5 else -1.0) / np.sqrt(3)
        out = bg + direction * floor
    return np.clip(out, 0, 1).astype(np.float32)


def _occluder(rng: np.random.Generator, pose: Pose) -> np.ndarray:
    """A bar crossing the object (partial occlusion)."""
    img = Image.new("L", (CANVAS, CANVAS), 0)
    a = rng.uniform(0, np.pi)
    offset = rng.uniform(-0.5, 0.5) * pose.radius
    nx, ny = -np.sin(a), np.cos(a)
    cx, cy = pose.cx + nx * offset, pose.cy + ny * offset
    d = np.array([np.cos(a), np.sin(a)]) * CANVAS
    width = max(2, round(pose.radius * rng.uniform(0.25, 0.45)))
    ImageDraw.Draw(img).line([(cx - d[0], cy - d[1]), (cx + d[0], cy + d[1])], fill=255, width=width)
    return np.asarray(img, dtype=np.float32) / 255.0


@dataclass
class SketchStyle:
    """A pencil sketch: dark strokes of the outline on light paper.

    Attributes:
        radius: Object radius range in output pixels.
        rotation: Maximum absolute rotation (radians).
        stroke: Stroke width range in output pixels.
        wobble: Hand-drawn wobble range (unit-frame units).
        strokes: Inclusive range of overlapping strokes.
        gap_prob: Probability of leaving out each outline segment.
        hatching_prob: Probability of faint hatching inside the shape.
        ink: Stroke darkness range (value of the ink colour).
        paper: Paper brightness range.
        noise: Sensor noise range.
    """

    radius: Range = (8.0, 13.0)
    rotation: float = np.pi
    stroke: Range = (0.8, 1.5)
    wobble: Range = (0.0, 0.05)
    strokes: tuple[int, int] = (1, 1)
    gap_prob: float = 0.0
    hatching_prob: float = 0.0
    ink: Range = (0.05, 0.3)
    paper: Range = (0.9, 1.0)
    noise: Range = (0.0, 0.02)

    def render(self, rng: np.random.Generator, cls: str) -> tuple[np.ndarray, Meta]:
        """Render one image (see :meth:`PhotoStyle.render`)."""
        paper = hsv(rng.uniform(0.05, 0.15), rng.uniform(0, 0.12), rng.uniform(*self.paper))
        img = background(rng, paper, texture=0.03)
        pose = _pose(rng, self.radius, rotation=self.rotation)
        geom = geometry(cls)
        ink = hsv(0, 0, rng.uniform(*self.ink))
        if rng.random() < self.hatching_prob:
            mask = shape_mask(geom, pose) * 0.4
            box = mask_box(mask) or FULL
            hatch = fill_field(rng, paper, pose, pattern="striped", pattern_colour=ink, box=box)
            img = composite(img, mask, hatch, box)
        strokes = int(rng.integers(self.strokes[0], self.strokes[1] + 1))
        mask = outline_mask(
            geom,
            pose,
            rng.uniform(*self.stroke) * SUPERSAMPLE,
            rng=rng,
            wobble_amount=rng.uniform(*self.wobble),
            strokes=strokes,
            gap_prob=self.gap_prob,
        )
        img = composite(img, mask, ink)
        return finish(rng, img, noise=rng.uniform(*self.noise)), Meta(small=pose.radius < 7 * SUPERSAMPLE)


@dataclass
class CartoonStyle:
    """A cartoon: flat saturated fill, thick dark outline, pastel background, sometimes a face.

    Attributes:
        radius: Object radius range in output pixels.
        rotation: Maximum absolute rotation (radians).
        outline: Outline width range in output pixels.
        face_prob: Probability of drawing cartoon eyes on the shape.
        cel_prob: Probability of two-tone (cel) shading.
        bg_pattern_prob: Probability of a patterned (striped/dotted) background.
        fill_saturation: Fill saturation range.
        bg_saturation: Background saturation range.
        wobble: Outline wobble range.
    """

    radius: Range = (8.0, 13.0)
    rotation: float = np.pi
    outline: Range = (1.5, 2.5)
    face_prob: float = 0.3
    cel_prob: float = 0.3
    bg_pattern_prob: float = 0.2
    fill_saturation: Range = (0.7, 1.0)
    bg_saturation: Range = (0.15, 0.4)
    wobble: Range = (0.0, 0.0)
    colour_names: tuple[str, ...] = field(default_factory=lambda: tuple(n for n, h in COLOURS.items() if h is not None))

    def render(self, rng: np.random.Generator, cls: str) -> tuple[np.ndarray, Meta]:
        """Render one image (see :meth:`PhotoStyle.render`)."""
        bg_col = hsv(rng.uniform(), rng.uniform(*self.bg_saturation), rng.uniform(0.85, 1.0))
        img = background(rng, bg_col)
        if rng.random() < self.bg_pattern_prob:
            dummy = Pose(CANVAS / 2, CANVAS / 2, CANVAS / 3)
            other = hsv(rng.uniform(), rng.uniform(*self.bg_saturation), rng.uniform(0.85, 1.0))
            img = fill_field(
                rng, bg_col, dummy, pattern=("striped", "dotted")[int(rng.integers(2))], pattern_colour=other
            )
        pose = _pose(rng, self.radius, rotation=self.rotation)
        geom = geometry(cls)
        colour = self.colour_names[int(rng.integers(len(self.colour_names)))]
        base = COLOURS[colour] or 0.0
        fill = hsv(base + rng.uniform(-0.03, 0.03), rng.uniform(*self.fill_saturation), rng.uniform(0.85, 1.0))
        mask = shape_mask(geom, pose)
        box = mask_box(mask) or FULL
        field_ = fill_field(rng, fill, pose, shading=0.0, box=box)
        if rng.random() < self.cel_prob:
            # Two-tone cel shading: the half away from the light is a darker flat tone.
            xs = np.arange(CANVAS, dtype=np.float32)
            a = rng.uniform(0, 2 * np.pi)
            side = ((xs[None, box[1]] - pose.cx) * np.cos(a) + (xs[box[0], None] - pose.cy) * np.sin(a)) > 0
            field_[side] *= 0.72
        img = composite(img, mask, field_, box)
        ink = hsv(0, 0, rng.uniform(0.0, 0.12))
        img = composite(
            img,
            outline_mask(
                geom, pose, rng.uniform(*self.outline) * SUPERSAMPLE, rng=rng, wobble_amount=rng.uniform(*self.wobble)
            ),
            ink,
        )
        if rng.random() < self.face_prob:
            img = _face(rng, img, pose)
        return finish(rng, img), Meta(colour=colour, small=pose.radius < 7 * SUPERSAMPLE)


def _face(rng: np.random.Generator, img: np.ndarray, pose: Pose) -> np.ndarray:
    """Two cartoon eyes near the shape's centre."""
    white = Image.new("L", (CANVAS, CANVAS), 0)
    black = Image.new("L", (CANVAS, CANVAS), 0)
    dw, db = ImageDraw.Draw(white), ImageDraw.Draw(black)
    r = pose.radius * 0.17
    for sign in (-1, 1):
        ex, ey = pose.cx + sign * pose.radius * 0.28, pose.cy - pose.radius * 0.1
        dw.ellipse([ex - r, ey - r, ex + r, ey + r], fill=255)
        pr = r * 0.55
        db.ellipse([ex - pr, ey - pr + r * 0.2, ex + pr, ey + pr + r * 0.2], fill=255)
    img = composite(img, np.asarray(white, np.float32) / 255.0, np.ones(3, np.float32))
    return composite(img, np.asarray(black, np.float32) / 255.0, np.zeros(3, np.float32))
