"""Geometry of the ten toy shape classes: polygons in unit coordinates and their affine placement.

Each shape is a list of closed polygons ``(N, 2)`` in a unit frame (roughly inside the unit disc, y pointing down as
in images) plus a list of holes (only the ring has one). All shapes are polygons, circles included, so that the same
affine transform (stretch, shear, rotation, scale, translation) and the same hand-drawn wobble apply to every class.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from wiseft.toy.vocab import CLASSNAMES


def _regular(n: int, radius: float = 1.0, phase: float = 0.0) -> np.ndarray:
    angles = phase + np.arange(n) * 2 * np.pi / n
    return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _star() -> np.ndarray:
    outer = _regular(5, 1.05, -np.pi / 2)
    inner = _regular(5, 0.45, -np.pi / 2 + np.pi / 5)
    return np.stack([outer, inner], axis=1).reshape(10, 2)


def _cross(half_width: float = 0.3, extent: float = 0.95) -> np.ndarray:
    w, e = half_width, extent
    return np.array(
        [(-w, -e), (w, -e), (w, -w), (e, -w), (e, w), (w, w), (w, e), (-w, e), (-w, w), (-e, w), (-e, -w), (-w, -w)]
    )


def _arrow() -> np.ndarray:
    return np.array([(-1.0, -0.22), (0.15, -0.22), (0.15, -0.62), (1.0, 0.0), (0.15, 0.62), (0.15, 0.22), (-1.0, 0.22)])


def _heart(n: int = 48) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    pts = np.stack([x, y], axis=1) / 16.5
    return pts - pts.mean(axis=0) * np.array([0.0, 1.0])


@dataclass(frozen=True)
class ShapeGeometry:
    """A shape in unit coordinates.

    Attributes:
        outer: Filled polygons.
        holes: Polygons cut out of the fill (drawn in the background colour).
    """

    outer: tuple[np.ndarray, ...]
    holes: tuple[np.ndarray, ...] = ()


@cache
def geometry(name: str) -> ShapeGeometry:
    """The unit-frame geometry of a class.

    Args:
        name: One of ``CLASSNAMES``.

    Returns:
        The shape's polygons (arrays are shared; do not modify them in place).
    """
    polys = {
        "arrow": ShapeGeometry((_arrow(),)),
        "circle": ShapeGeometry((_regular(48, 1.0),)),
        "cross": ShapeGeometry((_cross(),)),
        "diamond": ShapeGeometry((np.array([(0.0, -1.05), (0.6, 0.0), (0.0, 1.05), (-0.6, 0.0)]),)),
        "heart": ShapeGeometry((_heart(),)),
        "hexagon": ShapeGeometry((_regular(6, 1.0),)),
        "ring": ShapeGeometry((_regular(48, 1.0),), (_regular(48, 0.55),)),
        "square": ShapeGeometry((np.array([(-0.85, -0.85), (0.85, -0.85), (0.85, 0.85), (-0.85, 0.85)]),)),
        "star": ShapeGeometry((_star(),)),
        "triangle": ShapeGeometry((_regular(3, 1.08, -np.pi / 2) + np.array([0.0, 0.1]),)),
    }
    if name not in polys:
        raise KeyError(f"unknown shape {name!r}; expected one of {CLASSNAMES}")
    return polys[name]


@dataclass(frozen=True)
class Pose:
    """Where and how a unit-frame shape is placed on the canvas.

    Attributes:
        cx: Centre x in canvas pixels.
        cy: Centre y in canvas pixels.
        radius: Scale in canvas pixels (unit frame radius 1 maps to this).
        angle: Rotation in radians.
        stretch: Anisotropic scale ``(sx, sy)`` applied before rotation (odd poses); ``(1, 1)`` is undistorted.
        shear: Horizontal shear applied before rotation.
    """

    cx: float
    cy: float
    radius: float
    angle: float = 0.0
    stretch: tuple[float, float] = (1.0, 1.0)
    shear: float = 0.0

    def apply(self, pts: np.ndarray) -> np.ndarray:
        """Map unit-frame points ``(N, 2)`` to canvas pixels."""
        sx, sy = self.stretch
        m = np.array([[sx, self.shear * sy], [0.0, sy]])
        c, s = np.cos(self.angle), np.sin(self.angle)
        rot = np.array([[c, -s], [s, c]])
        return (pts @ (rot @ m).T) * self.radius + np.array([self.cx, self.cy])


def resample_closed(pts: np.ndarray, n: int) -> np.ndarray:
    """Resample a closed polygon to ``n`` points evenly spaced along its perimeter (for smooth wobble)."""
    closed = np.concatenate([pts, pts[:1]], axis=0)
    seg = np.linalg.norm(np.diff(closed, axis=0), axis=1)
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    t = np.linspace(0.0, cum[-1], n, endpoint=False)
    return np.stack([np.interp(t, cum, closed[:, 0]), np.interp(t, cum, closed[:, 1])], axis=1)


def wobble(rng: np.random.Generator, pts: np.ndarray, amount: float, n: int = 64) -> np.ndarray:
    """Hand-drawn look: resample and displace a closed polygon by smooth low-frequency noise.

    Args:
        rng: Random generator.
        pts: Closed polygon in any frame.
        amount: Displacement amplitude in the polygon's units.
        n: Points after resampling.

    Returns:
        The displaced polygon ``(n, 2)``.
    """
    dense = resample_closed(pts, n)
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)[:, None]
    freqs = np.arange(1, 5)[None, :]
    offsets = np.zeros_like(dense)
    for axis in range(2):
        amp = rng.normal(0, amount, size=(1, 4)) / freqs
        phase = rng.uniform(0, 2 * np.pi, size=(1, 4))
        offsets[:, axis] = (amp * np.sin(freqs * t + phase)).sum(axis=1)
    return dense + offsets + rng.normal(0, amount * 0.15, size=dense.shape)
