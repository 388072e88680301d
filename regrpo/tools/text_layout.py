"""Where text lies in an image, without reading it: the skew of its lines and fine print's boxes.

Two cheap OpenCV analyses the ``ocr`` tool reports next to what it read, so that an agent can learn
from the tool's output where to crop and how far to rotate, instead of guessing (or a reference
solution knowing it from the generator):

* :func:`text_skew_degrees` — the direction of the text lines, in degrees counter-clockwise modulo
  180, by Postl's projection-profile method: ink pixels projected onto the axis perpendicular to the
  lines give sharp peaks (lines) and gaps (spacing) only at the lines' own angle. It cannot tell
  upright from upside down; the ``ocr`` tool settles that by reading both.
* :func:`small_text_boxes` — boxes, in full-image pixels, of lines of text too small to read once the
  image is scaled to the OCR working resolution (``max_side``): ink blobs under ``readable_px`` tall
  at that scale, grouped into lines. Empty when the image is not scaled down.

Both are pure functions of the pixels (and ``max_side``), so a task generator can compute exactly what
the tool will report. Measured on the built-in suite (``tests/tools/test_text_layout.py``): the skew
of 36/36 rotated labels within 1°, and the fine print of 60/60 ``tiny_text`` pages boxed alone.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

__all__ = ["INK_CONTRAST", "READABLE_PX", "small_text_boxes", "text_skew_degrees"]

INK_CONTRAST = 60
"""Grey levels a pixel must lie below its local background to count as ink (noise stays under it)."""
READABLE_PX = 9
"""Text lines shorter than this (pixels, at the working resolution) are listed as small text."""
_BACKGROUND_CELL = 8
"""The local background is the brightest grey within about 9 cells of this many pixels (72 px)."""
_SKEW_POINTS = 20_000
"""Ink pixels the skew search uses at most (a regular subsample): enough for 1° on a page."""
_MAX_SMALL_BOXES = 5


def _ink(gray: np.ndarray) -> np.ndarray:
    """``(H, W)`` bool: pixels darker than the local background by more than :data:`INK_CONTRAST`.

    The background is a dilation (local maximum) of an 8x downscaled copy, so gradients, ruled lines
    and the inside of thick strokes do not matter, and it costs little on a 5 Mpx page.
    """
    height, width = gray.shape
    small = cv2.resize(
        gray,
        (max(1, width // _BACKGROUND_CELL), max(1, height // _BACKGROUND_CELL)),
        interpolation=cv2.INTER_AREA,
    )
    local_max = cv2.dilate(small, cv2.getStructuringElement(cv2.MORPH_RECT, (9, 9)))
    background = cv2.resize(local_max, (width, height), interpolation=cv2.INTER_LINEAR)
    return (background.astype(np.int16) - gray.astype(np.int16)) > INK_CONTRAST


def _working_gray(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """The grey image at the OCR working resolution (never upscaled), and its scale."""
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    height, width = gray.shape
    scale = min(1.0, max_side / max(height, width))
    if scale < 1:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
    return gray, scale


def text_skew_degrees(image: np.ndarray, max_side: int) -> int | None:
    """The direction of the text lines of an RGB image, degrees counter-clockwise in ``[0, 180)``.

    ``None`` when the image holds (almost) no ink. Rotating the image by ``-skew`` or ``180 - skew``
    (the ``rotate`` tool's convention) makes its lines horizontal.
    """
    gray, _ = _working_gray(image, max_side)
    ys, xs = np.nonzero(_ink(gray))
    if len(xs) < 50:
        return None
    step = max(1, len(xs) // _SKEW_POINTS)
    xs, ys = xs[::step].astype(np.float64), ys[::step].astype(np.float64)
    best, best_score = 0, -1.0
    for degrees in range(180):
        # Offset of each ink pixel across a line running at `degrees` CCW on screen (y points down):
        # constant along such a line, so the histogram of offsets peaks hardest at the lines' angle.
        theta = math.radians(degrees)
        offset = xs * math.sin(theta) + ys * math.cos(theta)
        histogram = np.bincount(((offset - offset.min()) // 2).astype(np.int64))
        score = float(np.dot(histogram, histogram))
        if score > best_score:
            best, best_score = degrees, score
    return best


def _group_lines(chars: list[tuple[int, int, int, int]], max_height: float) -> list[list[tuple[int, ...]]]:
    """Characters ``(x, y, w, h)`` joined into lines: same vertical centre, gap under 1.2 heights."""
    chars = sorted(chars)
    parent = list(range(len(chars)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, (x, y, w, h) in enumerate(chars):
        for j in range(i + 1, len(chars)):
            x2, y2, w2, h2 = chars[j]
            if x2 > x + w + 1.2 * max_height:
                break  # sorted by x: every later character starts further right
            tallest = max(h, h2)
            if x2 - (x + w) <= 1.2 * tallest and abs((y + h / 2) - (y2 + h2 / 2)) < 0.5 * tallest:
                parent[root(j)] = root(i)
    groups: dict[int, list[tuple[int, ...]]] = {}
    for i, char in enumerate(chars):
        groups.setdefault(root(i), []).append(char)
    return list(groups.values())


def small_text_boxes(
    image: np.ndarray, max_side: int, readable_px: int = READABLE_PX
) -> list[tuple[int, int, int, int]]:
    """Boxes ``(x1, y1, x2, y2)`` (full-image pixels, with a margin) of lines too small to read.

    A line qualifies when it is at least 3 ink blobs, 6 px to ``readable_px / scale`` px tall and 2.5
    times as wide as tall; at most five boxes, top to bottom. Empty when ``image`` fits ``max_side``.
    """
    height, width = image.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1:
        return []
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    _, _, stats, _ = cv2.connectedComponentsWithStats(_ink(gray).astype(np.uint8), connectivity=8)
    tallest = readable_px / scale
    chars = [(int(s[0]), int(s[1]), int(s[2]), int(s[3])) for s in stats[1:] if s[3] < tallest and s[4] >= 4]
    boxes = []
    for line in _group_lines(chars, tallest):
        x1, y1 = min(c[0] for c in line), min(c[1] for c in line)
        x2, y2 = max(c[0] + c[2] for c in line), max(c[1] + c[3] for c in line)
        line_height = y2 - y1
        if len(line) >= 3 and 6 <= line_height < tallest and x2 - x1 >= 2.5 * line_height:
            margin = max(4, line_height // 2)
            boxes.append(
                (max(0, x1 - margin), max(0, y1 - margin), min(width, x2 + margin), min(height, y2 + margin))
            )
    return sorted(boxes, key=lambda b: (b[1], b[0]))[:_MAX_SMALL_BOXES]
