"""Text-rendering helpers shared by the task generators: fonts, backgrounds, text blocks, noise.

Fonts are matplotlib's bundled TrueType files (matplotlib is already a dependency, so no font is
ever downloaded): DejaVu faces for training tasks, STIX faces for held-out tasks only; a generator
picks a family and style per task so a model cannot key on one typeface. Everything takes an
explicit ``numpy.random.Generator``: the same seed draws the same pixels. Images are RGB ``uint8``
arrays of shape ``(H, W, 3)``, as in the tools' ``ImageStore``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from regrpo.tasks.draft import Variant

__all__ = [
    "BACKGROUNDS",
    "FONTS",
    "HOLDOUT_FONTS",
    "TEXT_FONTS",
    "TextBlock",
    "add_noise",
    "background",
    "font",
    "ink_colour",
    "render_block",
    "text_card",
    "text_width",
]

FONTS: tuple[str, ...] = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf",
)  # fmt: skip
"""Font files of training tasks; the *Display* and *BoldOblique* faces are left out (too thin / too
slanted to OCR)."""
HOLDOUT_FONTS: tuple[str, ...] = ("STIXGeneral.ttf", "STIXGeneralBol.ttf")
"""Font files of held-out tasks only: STIX (a Times-like serif, proportional), also shipped in
matplotlib's data folder, so it is present wherever matplotlib is. No training task uses it."""
TEXT_FONTS: dict[Variant, tuple[str, ...]] = {"train": FONTS, "holdout": HOLDOUT_FONTS}
"""The faces a text task of each variant draws from."""
BACKGROUNDS = ("plain", "gradient", "paper", "ruled")


@lru_cache(maxsize=64)
def font(name: str, size: int) -> ImageFont.FreeTypeFont:
    """A font file from matplotlib's data folder (DejaVu or STIX), ``size`` pixels per em."""
    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name
    return ImageFont.truetype(str(path), size)


def ink_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    """A dark text colour (near black, navy, dark red, dark green, brown)."""
    palette = [(20, 20, 20), (30, 30, 90), (110, 20, 20), (20, 80, 30), (70, 45, 20), (50, 50, 50)]
    return palette[int(rng.integers(len(palette)))]


def background(rng: np.random.Generator, width: int, height: int, style: str) -> np.ndarray:
    """A light ``(height, width, 3)`` canvas: plain, a gradient, noisy paper or ruled paper."""
    base = rng.integers(215, 256, size=3)
    canvas = np.broadcast_to(base, (height, width, 3)).astype(np.float32)
    if style == "gradient":
        other = rng.integers(200, 256, size=3)
        t = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :, None]
        canvas = (canvas * (1 - t) + other * t).astype(np.float32)
    elif style == "paper":
        canvas = (canvas + rng.normal(0.0, 6.0, size=(height, width, 1))).astype(np.float32)
    elif style == "ruled":
        step = int(rng.integers(18, 30))
        canvas = canvas.copy()
        canvas[::step, :, :] = canvas[::step, :, :] * 0.85 + np.array([120, 150, 220]) * 0.15
    return np.clip(canvas, 0, 255).astype(np.uint8)


def add_noise(image: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """``image`` plus Gaussian pixel noise of standard deviation ``sigma`` (grey levels)."""
    if sigma <= 0:
        return image
    noisy = image.astype(np.float32) + rng.normal(0.0, sigma, size=image.shape[:2] + (1,))
    return np.clip(noisy, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class TextBlock:
    """Lines of text drawn on a canvas, and where each line landed."""

    image: np.ndarray
    lines: list[str]
    boxes: list[tuple[int, int, int, int]]
    """``[x1, y1, x2, y2]`` of each line's ink, x2/y2 exclusive."""

    @property
    def box(self) -> tuple[int, int, int, int]:
        """The box around all lines."""
        xs1, ys1, xs2, ys2 = zip(*self.boxes, strict=True)
        return min(xs1), min(ys1), max(xs2), max(ys2)


def render_block(
    canvas: np.ndarray,
    lines: list[str],
    *,
    font_name: str,
    size: int,
    colour: tuple[int, int, int],
    origin: tuple[int, int],
    spacing: float = 1.5,
    align_right: dict[int, int] | None = None,
) -> TextBlock:
    """Draw ``lines`` top to bottom from ``origin`` (x, y) onto a copy of ``canvas``.

    ``align_right`` maps a line index to an x where that line should *end* (for price columns).
    """
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    face = font(font_name, size)
    x0, y = origin
    boxes = []
    for i, line in enumerate(lines):
        x = x0
        if align_right and i in align_right:
            x = align_right[i] - int(draw.textlength(line, font=face))
        draw.text((x, y), line, font=face, fill=colour)
        left, top, right, bottom = draw.textbbox((x, y), line, font=face)
        boxes.append((int(left), int(top), int(right) + 1, int(bottom) + 1))
        y += int(size * spacing)
    return TextBlock(np.asarray(image, dtype=np.uint8).copy(), list(lines), boxes)


def text_card(
    rng: np.random.Generator,
    lines: list[str],
    *,
    width: int,
    height: int,
    style: str,
    font_name: str,
    size: int,
    origin: tuple[int, int],
    spacing: float,
) -> TextBlock:
    """``lines`` in a random ink on a ``width`` x ``height`` background (a sign, a tag, a label)."""
    canvas = background(rng, width, height, style)
    return render_block(
        canvas, lines, font_name=font_name, size=size, colour=ink_colour(rng), origin=origin, spacing=spacing
    )


def text_width(text: str, font_name: str, size: int) -> int:
    """Pixels ``text`` takes in this font."""
    return int(font(font_name, size).getlength(text))
