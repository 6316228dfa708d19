"""The toy world's domains: the captioned web corpus, the reference domain and five shift domains.

Modelled on the WiSE-FT paper's setting:

* ``web``: image-caption pairs over many styles (the "internet" CLIP is pretrained on). Backgrounds are random, so
  the zero-shot model has no reason to use them. Captions mostly name style and shape, sometimes colour or pattern.
  Like real alt-text they are imperfect: sketches and cartoons of some classes are rare, and four pairs of similar
  shapes are mixed up in 35% of their captions, so zero-shot confuses them. Fine-tuning on clean labels fixes that
  confusion, an improvement that transfers to every domain; that is what lets the interpolated model beat both ends.
* ``reference`` (ImageNet): hard photo-like images (small, low-contrast, rotated, cluttered objects) whose background
  hue goes with the class 60% of the time, a contextual shortcut that fine-tuning picks up and zero-shot ignores.
* ``v2`` (ImageNetV2): a re-sample of the reference process with a different seed, slightly smaller and
  lower-contrast objects and a slightly weaker shortcut.
* ``sketch`` (ImageNet-Sketch): wobbly, broken, sometimes hatched pencil outlines on paper.
* ``rendition`` (ImageNet-R): cartoons with faces, cel shading and patterned backgrounds.
* ``objectnet`` (ObjectNet): odd poses (stretched, sheared, cut off by the frame), random backgrounds, clutter.
* ``hard`` (ImageNet-A): small, low-contrast objects among more clutter, half of them crossed by an occluding bar, on
  a background that belongs to another class (the shortcut misleads).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from wiseft.toy.styles import CartoonStyle, Meta, PhotoStyle, SketchStyle
from wiseft.toy.vocab import CLASSNAMES

#: Background hue that goes with each class in the reference domain (evenly spaced on the colour wheel).
CLASS_HUES: tuple[float, ...] = tuple(i / len(CLASSNAMES) for i in range(len(CLASSNAMES)))

#: Evaluation-only shift domains, in reporting order.
SHIFT_DOMAINS: tuple[str, ...] = ("v2", "sketch", "rendition", "objectnet", "hard")

Sample = tuple[np.ndarray, str | None]


@dataclass
class ShortcutPhotos:
    """Photo-like images whose background hue is tied to the class with some probability.

    Attributes:
        style: How objects and scenes look.
        shortcut: Probability that the background has the class's hue (``CLASS_HUES``); otherwise it is random.
        misleading: If true, a background without the shortcut gets another class's hue instead of a random one.
        hue_jitter: Standard deviation of the background hue around the class hue.
    """

    style: PhotoStyle
    shortcut: float = 0.0
    misleading: bool = False
    hue_jitter: float = 0.02

    def sample(self, rng: np.random.Generator, label: int) -> Sample:
        """Render one image of class ``label``; no caption."""
        n = len(CLASSNAMES)
        if rng.random() < self.shortcut:
            hue = CLASS_HUES[label] + rng.normal(0, self.hue_jitter)
        elif self.misleading:
            hue = CLASS_HUES[(label + int(rng.integers(1, n))) % n] + rng.normal(0, self.hue_jitter)
        else:
            hue = None
        img, _ = self.style.render(rng, CLASSNAMES[label], bg_hue=hue)
        return img, None


@dataclass
class Uncaptioned:
    """Images of a sketch or cartoon style, without captions."""

    style: SketchStyle | CartoonStyle

    def sample(self, rng: np.random.Generator, label: int) -> Sample:
        """Render one image of class ``label``; no caption."""
        img, _ = self.style.render(rng, CLASSNAMES[label])
        return img, None


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _photo_caption(rng: np.random.Generator, cls: str, meta: Meta) -> str:
    if meta.pattern is not None and rng.random() < 0.5:
        return _pick(rng, ("a photo of a {p} {c}", "a {p} {c}")).format(p=meta.pattern, c=cls)
    if meta.colour is not None and rng.random() < 0.12:
        return _pick(rng, ("a photo of a {k} {c}", "a {k} {c}")).format(k=meta.colour, c=cls)
    if meta.small:
        return _pick(rng, ("a photo of a small {c}", "a small {c}", "a photo of a {c}")).format(c=cls)
    return _pick(
        rng, ("a photo of a {c}", "a picture of a {c}", "a close up photo of a {c}", "a photo of a big {c}", "a {c}")
    ).format(c=cls)


@dataclass
class WebCorpus:
    """The captioned pretraining corpus: a mixture of styles, each with its own caption phrasing.

    Attributes:
        photo: Clean photos (large, good contrast).
        small_photo: Small or low-contrast photos (captioned as small or blurry).
        clutter: Cluttered scenes.
        sketch: Clean pencil sketches.
        cartoon: Cartoons.
        weights: Mixture weights of ``photo, small_photo, clutter, sketch, cartoon``.
        rare_sketch: Classes whose sketches are rare on the web (partial style coverage, so that zero-shot
            sketch accuracy has room to move).
        rare_cartoon: Classes whose cartoons are rare on the web.
        rare_factor: How much rarer (multiplier of the style's mixture weight for those classes).
        confusable: Pairs of similar shapes that web captions mix up (noisy alt-text), so that the zero-shot model
            confuses them and fine-tuning on clean labels has something to fix that transfers to every domain.
        confusion_rate: Probability that a caption of a class in ``confusable`` names its partner instead.
    """

    photo: PhotoStyle
    small_photo: PhotoStyle
    clutter: PhotoStyle
    sketch: SketchStyle
    cartoon: CartoonStyle
    weights: tuple[float, float, float, float, float] = (0.3, 0.2, 0.2, 0.15, 0.15)
    rare_sketch: tuple[str, ...] = ()
    rare_cartoon: tuple[str, ...] = ()
    rare_factor: float = 1.0
    confusable: tuple[tuple[str, str], ...] = ()
    confusion_rate: float = 0.0

    def sample(self, rng: np.random.Generator, label: int) -> Sample:
        """Render one image of class ``label`` with its caption."""
        cls = CLASSNAMES[label]
        p = np.asarray(self.weights, dtype=np.float64)
        p[3] *= self.rare_factor if cls in self.rare_sketch else 1.0
        p[4] *= self.rare_factor if cls in self.rare_cartoon else 1.0
        p /= p.sum()
        kind = int(rng.choice(len(p), p=p))
        if kind == 0:
            img, meta = self.photo.render(rng, cls)
            caption = _photo_caption(rng, cls, meta)
        elif kind == 1:
            blurry = rng.random() < 0.4
            style = self.small_photo if not blurry else _with_blur(self.small_photo)
            img, meta = style.render(rng, cls)
            caption = f"a blurry photo of a {cls}" if blurry else _photo_caption(rng, cls, meta)
        elif kind == 2:
            img, meta = self.clutter.render(rng, cls)
            caption = _pick(
                rng,
                ("a {c} in a cluttered scene", "a photo of a {c} in a cluttered scene", "a cluttered scene with a {c}"),
            ).format(c=cls)
        elif kind == 3:
            img, meta = self.sketch.render(rng, cls)
            caption = _pick(
                rng, ("a sketch of a {c}", "a pencil sketch of a {c}", "a drawing of a {c}", "a doodle of a {c}")
            ).format(c=cls)
        else:
            img, meta = self.cartoon.render(rng, cls)
            if rng.random() < 0.12:
                caption = f"a cartoon {meta.colour} {cls}"
            else:
                caption = _pick(
                    rng, ("a cartoon {c}", "a cartoon of a {c}", "a clipart of a {c}", "a rendition of a {c}")
                ).format(c=cls)
        # Drawn after the image, so the noise level changes captions only, never the images.
        if rng.random() < self.confusion_rate:
            partner = {a: b for pair in self.confusable for a, b in (pair, pair[::-1])}.get(cls)
            if partner is not None:
                caption = " ".join(partner if w == cls else w for w in caption.split())
        return img, caption


def _with_blur(style: PhotoStyle) -> PhotoStyle:
    return replace(style, blur=(0.5, 1.0), blur_prob=1.0)


# --- the world's parameters -------------------------------------------------------------------------------------

REFERENCE_STYLE = PhotoStyle(
    radius=(5.0, 9.0),
    contrast=(0.3, 0.7),
    bg_saturation=(0.25, 0.6),
    bg_value=(0.35, 0.85),
    texture=(0.03, 0.15),
    distractors=(1, 3),
    distractor_size=(3.0, 6.0),
    pattern_prob=0.1,
    noise=(0.02, 0.05),
    blur=(0.3, 0.7),
    blur_prob=0.3,
)

WEB = WebCorpus(
    photo=PhotoStyle(
        radius=(7.0, 13.0), contrast=(0.7, 1.0), distractors=(0, 1), pattern_prob=0.15, blur=(0.3, 0.7), blur_prob=0.1
    ),
    small_photo=PhotoStyle(radius=(4.5, 7.0), contrast=(0.4, 1.0), distractors=(0, 2), noise=(0.0, 0.05)),
    clutter=PhotoStyle(radius=(6.0, 11.0), contrast=(0.5, 1.0), distractors=(4, 8), texture=(0.0, 0.2)),
    sketch=SketchStyle(radius=(7.0, 13.0), wobble=(0.0, 0.04)),
    cartoon=CartoonStyle(radius=(7.0, 13.0), face_prob=0.2, cel_prob=0.2, bg_pattern_prob=0.1),
    rare_sketch=("heart", "hexagon", "ring", "triangle"),
    rare_cartoon=("arrow", "cross", "diamond", "star"),
    rare_factor=0.2,
    confusable=(("circle", "hexagon"), ("diamond", "square"), ("cross", "star"), ("arrow", "triangle")),
    confusion_rate=0.35,
)

#: Domain name -> image sampler. ``reference`` is split into train/val/test with disjoint random streams.
DOMAINS: dict[str, ShortcutPhotos | Uncaptioned | WebCorpus] = {
    "web": WEB,
    "reference": ShortcutPhotos(REFERENCE_STYLE, shortcut=0.6),
    "v2": ShortcutPhotos(replace(REFERENCE_STYLE, radius=(5.0, 8.5), contrast=(0.27, 0.65)), shortcut=0.55),
    "sketch": Uncaptioned(
        SketchStyle(
            radius=(6.0, 11.0),
            wobble=(0.04, 0.1),
            strokes=(1, 2),
            gap_prob=0.15,
            hatching_prob=0.3,
            ink=(0.15, 0.5),
            noise=(0.0, 0.04),
        )
    ),
    "rendition": Uncaptioned(
        CartoonStyle(radius=(6.0, 12.0), face_prob=0.5, cel_prob=0.5, bg_pattern_prob=0.4, wobble=(0.0, 0.05))
    ),
    "objectnet": ShortcutPhotos(
        PhotoStyle(
            radius=(5.0, 10.0),
            stretch=(0.6, 0.85),
            shear=0.25,
            margin=0.7,
            contrast=(0.35, 0.8),
            texture=(0.05, 0.2),
            distractors=(1, 3),
            noise=(0.01, 0.04),
        ),
        shortcut=0.0,
    ),
    "hard": ShortcutPhotos(
        replace(REFERENCE_STYLE, radius=(5.0, 8.5), contrast=(0.3, 0.6), distractors=(2, 3), occluders=(0, 1)),
        shortcut=0.0,
        misleading=True,
    ),
}

SampleFn = Callable[[np.random.Generator, int], Sample]


def sampler(domain: str) -> SampleFn:
    """The image sampler of a domain.

    Args:
        domain: ``web``, ``reference`` or one of ``SHIFT_DOMAINS``.

    Returns:
        ``sample(rng, label) -> (uint8 image, caption or None)``.
    """
    return DOMAINS[domain].sample
