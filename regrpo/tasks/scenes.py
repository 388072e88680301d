"""Synthetic scenes of coloured shapes: the images behind the suite's detection and counting tasks.

A scene is drawn from a seeded ``numpy.random.Generator``, so the same seed gives the same pixels and
the same ground truth (kind, colour and tight box of every shape). The same renderer feeds
``scripts/train_detector.py``, which trains the shipped detector, so the detector has seen this
distribution and nothing else.

Choices that matter downstream:

* Backgrounds (plain, gradient, noise, texture) have low saturation (HSV S below about 0.25), while
  every named colour is fully saturated. That is what lets ``regrpo.tools.detect`` name a box's colour
  from its most saturated pixels, for any checkpoint.
* Shapes vary in size (about 5-20 % of the shorter side), in rotation (squares, triangles, stars,
  crosses) and slightly in shade, and may overlap only lightly: at most 10 % of the smaller box is
  covered, so every object stays visible and countable.
* Boxes are ``(x1, y1, x2, y2)`` pixels with ``x2``/``y2`` exclusive, measured from the shape's own
  drawn mask, so they are tight.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from regrpo.errors import InputError

__all__ = ["COLOURS", "SHAPE_KINDS", "Scene", "SceneObject", "render_scene"]

SHAPE_KINDS: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")
"""The shapes a scene may hold; also the detector's class names, in this order."""

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (245, 140, 20),
    "yellow": (235, 215, 25),
    "green": (30, 165, 60),
    "blue": (30, 80, 220),
    "purple": (140, 45, 195),
}
"""Named RGB colours far apart in hue: red 0°, orange 32°, yellow 54°, green 133°, blue 224°, purple 278°."""

_MAX_OVERLAP = 0.10
"""Largest fraction of the smaller box that another object's box may cover."""
_PLACEMENT_TRIES = 60


@dataclass(frozen=True)
class SceneObject:
    """One shape in a scene: what it is, its colour name and its tight box ``(x1, y1, x2, y2)``."""

    kind: str
    color: str
    box: tuple[int, int, int, int]


@dataclass(frozen=True)
class Scene:
    """A rendered scene: the RGB ``uint8`` ``(H, W, 3)`` image and the ground truth, in drawing order."""

    image: np.ndarray
    objects: list[SceneObject]

    def count(self, kind: str | None = None, color: str | None = None) -> int:
        """How many objects match ``kind`` and ``color`` (``None`` matches anything)."""
        return sum(
            1
            for o in self.objects
            if (kind is None or o.kind == kind) and (color is None or o.color == color)
        )


def _low_saturation_colour(rng: np.random.Generator) -> np.ndarray:
    """A greyish RGB colour: a random grey level pulled a little towards a random hue."""
    grey = rng.uniform(90, 235)
    tint = rng.uniform(-18, 18, size=3)
    return np.clip(grey + tint, 0, 255)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    style = rng.choice(["plain", "gradient", "noise", "texture"])
    base = _low_saturation_colour(rng)
    if style == "plain":
        image = np.broadcast_to(base, (height, width, 3)).astype(np.float64)
    elif style == "gradient":
        other = _low_saturation_colour(rng)
        angle = rng.uniform(0, 2 * math.pi)
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        t = xs * math.cos(angle) + ys * math.sin(angle)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
        image = base * (1 - t[..., None]) + other * t[..., None]
    elif style == "noise":
        noise = rng.normal(0, rng.uniform(8, 22), size=(height, width, 1))  # grey noise: no hue
        image = base + noise
    else:  # texture: soft stripes or a checkerboard in two near-greys
        other = _low_saturation_colour(rng)
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        period = rng.uniform(14, 48)
        if rng.random() < 0.5:
            angle = rng.uniform(0, math.pi)
            wave = 0.5 + 0.5 * np.sin(2 * math.pi * (xs * math.cos(angle) + ys * math.sin(angle)) / period)
        else:
            wave = ((xs // period + ys // period) % 2).astype(np.float32)
        image = base * (1 - wave[..., None]) + other * wave[..., None]
    return np.clip(image, 0, 255).astype(np.uint8)


def _polygon(kind: str, cx: float, cy: float, radius: float, angle: float) -> np.ndarray:
    """Vertices (N, 2) int32 of a regular shape centred on (cx, cy), rotated by ``angle`` radians."""
    if kind == "square":
        offsets = [math.pi / 4 + k * math.pi / 2 for k in range(4)]
        radii = [radius] * 4
    elif kind == "triangle":
        offsets = [-math.pi / 2 + k * 2 * math.pi / 3 for k in range(3)]
        radii = [radius] * 3
    elif kind == "star":
        offsets = [-math.pi / 2 + k * math.pi / 5 for k in range(10)]
        radii = [radius if k % 2 == 0 else radius * 0.45 for k in range(10)]
    elif kind == "cross":
        arm = 0.33  # half the arm's thickness, as a fraction of the radius
        corners = [(arm, 1), (arm, arm), (1, arm), (1, -arm), (arm, -arm), (arm, -1)]
        corners += [(-arm, -1), (-arm, -arm), (-1, -arm), (-1, arm), (-arm, arm), (-arm, 1)]
        offsets = [math.atan2(y, x) for x, y in corners]
        radii = [radius * math.hypot(x, y) / math.sqrt(2) for x, y in corners]
    else:
        raise InputError(f"unknown shape kind {kind!r}; choose from {', '.join(SHAPE_KINDS)}")
    points = [
        (cx + r * math.cos(o + angle), cy + r * math.sin(o + angle))
        for o, r in zip(offsets, radii, strict=True)
    ]
    return np.round(np.array(points, dtype=np.float64) * 16).astype(np.int32)  # 4 fractional bits


def _shape_mask(
    kind: str, height: int, width: int, cx: float, cy: float, radius: float, angle: float
) -> np.ndarray:
    """A uint8 anti-aliased coverage mask (0-255) of one shape."""
    mask = np.zeros((height, width), dtype=np.uint8)
    if kind == "circle":
        centre = (round(cx * 16), round(cy * 16))
        cv2.circle(mask, centre, round(radius * 16), 255, -1, cv2.LINE_AA, shift=4)
    else:
        cv2.fillPoly(mask, [_polygon(kind, cx, cy, radius, angle)], 255, cv2.LINE_AA, shift=4)
    return mask


def _box_of(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    ys, xs = np.nonzero(mask >= 128)
    if len(xs) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _overlaps_too_much(box: tuple[int, int, int, int], others: list[SceneObject]) -> bool:
    x1, y1, x2, y2 = box
    area = (x2 - x1) * (y2 - y1)
    for other in others:
        ox1, oy1, ox2, oy2 = other.box
        inter = max(0, min(x2, ox2) - max(x1, ox1)) * max(0, min(y2, oy2) - max(y1, oy1))
        smaller = min(area, (ox2 - ox1) * (oy2 - oy1))
        if inter > _MAX_OVERLAP * smaller:
            return True
    return False


def _check_names(given: Sequence[str] | None, known: Sequence[str], what: str) -> list[str]:
    names = list(known if given is None else given)
    unknown = [n for n in names if n not in known]
    if not names or unknown:
        raise InputError(f"{what} must be a non-empty subset of {', '.join(known)}; got {given!r}")
    return names


def render_scene(
    rng: np.random.Generator,
    *,
    width: int = 480,
    height: int = 360,
    n_objects: tuple[int, int] = (3, 9),
    kinds: Sequence[str] | None = None,
    colours: Sequence[str] | None = None,
) -> Scene:
    """Draw a scene of coloured shapes on a varied, low-saturation background.

    Args:
        rng: Source of all randomness; the same generator state gives the same scene.
        width: Image width in pixels (at least 64).
        height: Image height in pixels (at least 64).
        n_objects: Inclusive range of how many shapes to try to place; a crowded image may hold fewer
            (placement gives up on a shape after 60 tries rather than overlap heavily).
        kinds: Shape kinds to draw from (default all of ``SHAPE_KINDS``).
        colours: Colour names to draw from (default all of ``COLOURS``).

    Returns:
        The image and its objects with tight boxes.
    """
    if width < 64 or height < 64:
        raise InputError(f"scenes must be at least 64x64 pixels, got {width}x{height}")
    low, high = n_objects
    if not 0 <= low <= high:
        raise InputError(f"n_objects must be (low, high) with 0 <= low <= high, got {n_objects}")
    kind_names = _check_names(kinds, SHAPE_KINDS, "kinds")
    colour_names = _check_names(colours, list(COLOURS), "colours")

    canvas = _background(rng, height, width).astype(np.float32)
    objects: list[SceneObject] = []
    short_side = min(width, height)
    for _ in range(int(rng.integers(low, high + 1))):
        kind = str(rng.choice(kind_names))
        colour = str(rng.choice(colour_names))
        for _try in range(_PLACEMENT_TRIES):
            radius = rng.uniform(0.05, 0.13) * short_side
            cx = rng.uniform(radius + 2, width - radius - 2)
            cy = rng.uniform(radius + 2, height - radius - 2)
            angle = rng.uniform(-0.3, 0.3)
            mask = _shape_mask(kind, height, width, cx, cy, radius, angle)
            box = _box_of(mask)
            if box is not None and not _overlaps_too_much(box, objects):
                break
        else:
            continue  # no room left for this one
        shade = np.array(COLOURS[colour], dtype=np.float32) * rng.uniform(0.85, 1.08)
        shade = np.clip(shade + rng.uniform(-10, 10, size=3), 0, 255)
        alpha = (mask.astype(np.float32) / 255.0)[..., None]
        canvas = canvas * (1 - alpha) + shade * alpha
        objects.append(SceneObject(kind, colour, box))
    image = np.clip(np.round(canvas), 0, 255).astype(np.uint8)
    return Scene(image=image, objects=objects)
