"""OpenCV image tools: crop, zoom, rotate, flip, grayscale, threshold, contrast, boxes and text.

Each tool reads an image from the episode's store by id, makes a *new* RGB ``uint8`` ``(H, W, 3)``
array (stored images are read-only and are never edited in place), registers it with
``ctx.images.add(..., source=<tool name>)`` and returns ``{"image": new_id, "width": W, "height": H}``
so the model can refer to the result. Coordinates are pixels with the origin at the top-left corner;
a box is ``[x1, y1, x2, y2]`` with ``x2`` and ``y2`` exclusive, like a numpy slice.

A box that misses the image is ``GroundingDrift`` (the model looked in the wrong place); a malformed
box or an out-of-range number is ``ArgInvalid``. Descriptions are kept short: they go into a small
model's prompt.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

import cv2
import numpy as np
from pydantic import Field

from regrpo.errors import ErrorType
from regrpo.tools.base import FunctionTool, ToolContext, tool
from regrpo.tools.errors import ToolError
from regrpo.tools.images import MAX_PIXELS

__all__ = [
    "IMAGE_TOOLS",
    "add_text",
    "crop",
    "draw_box",
    "enhance_contrast",
    "flip",
    "grayscale",
    "resize",
    "rotate",
    "rotated_array",
    "threshold",
]

MAX_RESIZE_PIXELS = 16_000_000
"""Largest image ``resize`` may produce (16 MP): zooming further shows no more detail."""

Box = Annotated[list[int], Field(min_length=4, max_length=4)]
Point = Annotated[list[int], Field(min_length=2, max_length=2)]
Color = Literal["red", "green", "blue", "yellow", "black", "white"]

_RGB: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0), "green": (0, 200, 0), "blue": (0, 0, 255),
    "yellow": (255, 255, 0), "black": (0, 0, 0), "white": (255, 255, 255),
}  # fmt: skip
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_TEXT_THICKNESS = 2
"""OpenCV 5 draws text with a built-in TrueType font (Unicode included) and reads ``thickness`` as a font
weight, not a stroke width: 1 is regular, 2 semi-bold, 4 and up black, whatever the scale."""
_EXACT_ROTATIONS = {90: cv2.ROTATE_90_COUNTERCLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_CLOCKWISE}


def _stored(ctx: ToolContext, array: np.ndarray, source: str) -> dict[str, Any]:
    """Register a tool's output image and describe it to the model."""
    image_id = ctx.images.add(array, source=source)
    height, width = array.shape[:2]
    return {"image": image_id, "width": width, "height": height}


def _clip_box(box: list[int], image_id: str, width: int, height: int) -> tuple[int, int, int, int]:
    """``box`` clipped to the image; ArgInvalid if it is malformed, GroundingDrift if it misses."""
    x1, y1, x2, y2 = box
    if x1 >= x2 or y1 >= y2:
        raise ToolError(f"box must be [x1, y1, x2, y2] with x1 < x2 and y1 < y2, got {box}")
    cx1, cy1, cx2, cy2 = max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)
    if cx1 >= cx2 or cy1 >= cy2:
        raise ToolError(
            f"box {box} lies outside image {image_id}, which is {width}x{height} pixels "
            f"(x from 0 to {width}, y from 0 to {height})",
            ErrorType.GROUNDING_DRIFT,
        )
    return cx1, cy1, cx2, cy2


def _line_px(width: int, height: int) -> int:
    """Stroke width in pixels for boxes: 1 px below 450 px images, thicker on larger ones."""
    return max(1, round(max(width, height) / 300))


@tool
def crop(image: str, box: Box, ctx: ToolContext) -> dict[str, Any]:
    """Cut out a region of an image; box is [x1, y1, x2, y2] in pixels.

    Args:
        image: Id of the image, like img_0.
        box: [x1, y1, x2, y2] in pixels, top-left origin; parts outside the image are dropped.
    """
    source = ctx.images.get(image)
    x1, y1, x2, y2 = _clip_box(box, image, source.shape[1], source.shape[0])
    result = _stored(ctx, source[y1:y2, x1:x2].copy(), "crop")
    return {**result, "box": [x1, y1, x2, y2]}


@tool
def resize(image: str, ctx: ToolContext, scale: Annotated[float, Field(gt=0, le=8)] = 2.0) -> dict[str, Any]:
    """Zoom an image in (scale > 1) or out (scale < 1).

    Args:
        image: Id of the image, like img_0.
        scale: Factor applied to width and height, above 0 and at most 8.
    """
    source = ctx.images.get(image)
    height, width = source.shape[:2]
    new_width, new_height = max(1, round(width * scale)), max(1, round(height * scale))
    if new_width * new_height > MAX_RESIZE_PIXELS:
        raise ToolError(
            f"resizing {image} ({width}x{height}) by {scale:g} gives {new_width}x{new_height}, over the "
            f"{MAX_RESIZE_PIXELS // 1_000_000} MP limit; crop first or use a smaller scale"
        )
    # Cubic interpolation keeps zoomed-in text sharp; area averaging avoids aliasing when shrinking.
    interpolation = cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA
    return _stored(ctx, cv2.resize(source, (new_width, new_height), interpolation=interpolation), "resize")


@tool
def rotate(
    image: str, angle: Annotated[float, Field(allow_inf_nan=False)], ctx: ToolContext
) -> dict[str, Any]:
    """Rotate an image counter-clockwise by angle degrees; the canvas grows to fit, padded white.

    Args:
        image: Id of the image, like img_0.
        angle: Degrees counter-clockwise (negative turns clockwise); multiples of 90 are exact.
    """
    return _stored(ctx, rotated_array(ctx.images.get(image), angle, image), "rotate")


def rotated_array(source: np.ndarray, angle: float, image_id: str = "image") -> np.ndarray:
    """``source`` turned ``angle`` degrees counter-clockwise, as :func:`rotate` does (a new array).

    Shared with the ``ocr`` tool, which tries rotations to say how far sideways text is turned, so
    the angle it reports gives exactly the image it read when passed to ``rotate``.
    """
    degrees = angle % 360
    if degrees == 0:
        return source.copy()
    if degrees in _EXACT_ROTATIONS:
        return cv2.rotate(source, _EXACT_ROTATIONS[int(degrees)])
    height, width = source.shape[:2]
    cos, sin = abs(math.cos(math.radians(degrees))), abs(math.sin(math.radians(degrees)))
    new_width, new_height = math.ceil(width * cos + height * sin), math.ceil(width * sin + height * cos)
    if new_width * new_height > MAX_PIXELS:
        raise ToolError(f"rotating {image_id} ({width}x{height}) gives {new_width}x{new_height}, too large")
    # OpenCV's positive angle is counter-clockwise on screen (y points down); shift so the centre moves
    # to the middle of the larger canvas.
    matrix = cv2.getRotationMatrix2D(((width - 1) / 2, (height - 1) / 2), degrees, 1.0)
    matrix[0, 2] += (new_width - width) / 2
    matrix[1, 2] += (new_height - height) / 2
    return cv2.warpAffine(
        source, matrix, (new_width, new_height), flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT, borderValue=(255, 255, 255),
    )  # fmt: skip


@tool
def flip(image: str, direction: Literal["horizontal", "vertical"], ctx: ToolContext) -> dict[str, Any]:
    """Mirror an image left-right (horizontal) or upside down (vertical).

    Args:
        image: Id of the image, like img_0.
        direction: "horizontal" swaps left and right; "vertical" swaps top and bottom.
    """
    source = ctx.images.get(image)
    return _stored(ctx, cv2.flip(source, 1 if direction == "horizontal" else 0), "flip")


def _gray(source: np.ndarray) -> np.ndarray:
    """(H, W) luma of an RGB image."""
    return cv2.cvtColor(source, cv2.COLOR_RGB2GRAY)


@tool
def grayscale(image: str, ctx: ToolContext) -> dict[str, Any]:
    """Convert an image to shades of gray.

    Args:
        image: Id of the image, like img_0.
    """
    gray = _gray(ctx.images.get(image))
    return _stored(ctx, cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB), "grayscale")


@tool
def threshold(
    image: str, ctx: ToolContext, value: Annotated[int, Field(ge=0, le=255)] | None = None
) -> dict[str, Any]:
    """Make an image pure black and white: pixels brighter than value become white.

    Args:
        image: Id of the image, like img_0.
        value: Gray level 0-255; leave it out to pick one automatically (Otsu's method).
    """
    gray = _gray(ctx.images.get(image))
    if value is None:
        level, binary = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    else:
        level, binary = cv2.threshold(gray, value, 255, cv2.THRESH_BINARY)
    result = _stored(ctx, cv2.cvtColor(binary, cv2.COLOR_GRAY2RGB), "threshold")
    return {**result, "threshold": int(level)}


@tool
def enhance_contrast(
    image: str, ctx: ToolContext, clip_limit: Annotated[float, Field(gt=0, le=40)] = 2.0
) -> dict[str, Any]:
    """Boost local contrast (CLAHE) to make faint text or details easier to see.

    Args:
        image: Id of the image, like img_0.
        clip_limit: Strength, above 0 and at most 40; 2 is mild, 4 is strong.
    """
    source = ctx.images.get(image)
    # Equalise lightness only (L of LAB), so colours do not shift.
    lightness, a, b = cv2.split(cv2.cvtColor(source, cv2.COLOR_RGB2LAB))
    clahe = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(8, 8))
    lab = cv2.merge([clahe.apply(lightness), a, b])
    return _stored(ctx, cv2.cvtColor(lab, cv2.COLOR_LAB2RGB), "enhance_contrast")


@tool
def draw_box(image: str, box: Box, ctx: ToolContext, label: str = "", color: Color = "red") -> dict[str, Any]:
    """Draw a rectangle, with an optional label, on a copy of an image.

    Args:
        image: Id of the image, like img_0.
        box: [x1, y1, x2, y2] in pixels, top-left origin.
        label: Short text written above the box.
        color: One of red, green, blue, yellow, black, white.
    """
    source = ctx.images.get(image)
    height, width = source.shape[:2]
    x1, y1, x2, y2 = _clip_box(box, image, width, height)
    canvas, rgb, line_px = source.copy(), _RGB[color], _line_px(width, height)
    cv2.rectangle(canvas, (x1, y1), (x2 - 1, y2 - 1), rgb, line_px)  # OpenCV's corners are inclusive
    if label:
        scale = 0.5 * line_px  # about 14 px tall per pixel of line width
        text_height = cv2.getTextSize(label, _FONT, scale, _TEXT_THICKNESS)[0][1]
        gap = 3 * line_px
        # Above the box when there is room, else just inside its top edge.
        baseline_y = y1 - gap if y1 - gap >= text_height else y1 + text_height + gap
        cv2.putText(canvas, label, (x1, baseline_y), _FONT, scale, rgb, _TEXT_THICKNESS, cv2.LINE_AA)
    return _stored(ctx, canvas, "draw_box")


@tool
def add_text(
    image: str,
    text: Annotated[str, Field(min_length=1, max_length=200)],
    position: Point,
    ctx: ToolContext,
    color: Color = "red",
    scale: Annotated[float, Field(gt=0, le=10)] = 1.0,
) -> dict[str, Any]:
    """Write text on a copy of an image.

    Args:
        image: Id of the image, like img_0.
        text: Text to write (one line).
        position: [x, y] in pixels of the text's bottom-left corner, top-left origin.
        color: One of red, green, blue, yellow, black, white.
        scale: Font size; 1.0 is about 27 pixels per line.
    """
    source = ctx.images.get(image)
    height, width = source.shape[:2]
    x, y = position
    if not (0 <= x < width and 0 <= y < height):
        raise ToolError(
            f"position {position} is outside image {image}, which is {width}x{height} pixels",
            ErrorType.GROUNDING_DRIFT,
        )
    canvas = source.copy()
    cv2.putText(canvas, text, (x, y), _FONT, scale, _RGB[color], _TEXT_THICKNESS, cv2.LINE_AA)
    return _stored(ctx, canvas, "add_text")


IMAGE_TOOLS: list[FunctionTool] = [
    crop, resize, rotate, flip, grayscale, threshold, enhance_contrast, draw_box, add_text,
]  # fmt: skip
"""The built-in image tools, in the order they are listed to the model."""
