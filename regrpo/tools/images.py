"""Images in an episode: loading what users hand us, and the per-episode ``ImageStore``.

Every image is kept once, as an RGB ``uint8`` array of shape ``(height, width, 3)``, under an id
``img_0``, ``img_1``, ... in the order it arrived. User images come first; images made by tools
(crops, rotations, ...) are added after them, so the model refers to every picture by id and nothing
is duplicated per turn.
"""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from regrpo.errors import ErrorType, ImageError
from regrpo.tools.errors import ToolError

__all__ = ["ImageInfo", "ImageInput", "ImageStore", "load_image", "png_bytes"]

ImageInput = str | Path | bytes | bytearray | Image.Image | np.ndarray
"""What ``Agent.run(images=...)`` accepts for each image."""

MAX_PIXELS = 64_000_000
"""Largest image accepted (64 MP): bigger ones are almost always a mistake or a decompression bomb."""


@dataclass(frozen=True)
class ImageInfo:
    """What the model is told about an image: its id, size and where it came from."""

    image_id: str
    width: int
    height: int
    source: str
    """``"user"`` for images the caller passed, else the name of the tool that made it."""


def _from_pil(image: Image.Image) -> np.ndarray:
    if image.width * image.height > MAX_PIXELS:
        raise ImageError(f"image is {image.width}x{image.height}, over the {MAX_PIXELS:,}-pixel limit")
    return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


def _from_array(array: np.ndarray) -> np.ndarray:
    if array.dtype != np.uint8:
        raise ImageError(
            f"numpy images must have dtype uint8 (0-255), got {array.dtype}; "
            "convert with (array * 255).clip(0, 255).astype(np.uint8) for floats in [0, 1]"
        )
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4) or min(array.shape[:2]) == 0:
        raise ImageError(f"numpy images must be HxW, HxWx3 (RGB) or HxWx4 (RGBA), got shape {array.shape}")
    if array.shape[0] * array.shape[1] > MAX_PIXELS:
        raise ImageError(f"image shape {array.shape} is over the {MAX_PIXELS:,}-pixel limit")
    return np.array(array[:, :, :3], order="C")  # a copy: the caller may keep editing its array


def _open(data: io.BytesIO | Path, what: str) -> np.ndarray:
    try:
        with Image.open(data) as image:
            return _from_pil(image)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError) as exc:
        raise ImageError(f"cannot decode {what} as an image: {exc}") from exc


def load_image(image: ImageInput) -> np.ndarray:
    """Load a path, encoded bytes, a PIL image or a numpy array as an RGB ``uint8`` ``(H, W, 3)`` array.

    Raises :class:`~regrpo.errors.ImageError` naming the problem: a missing file, undecodable bytes,
    a wrong dtype or shape, or an unsupported type.
    """
    if isinstance(image, (str, Path)):
        path = Path(image).expanduser()
        if not path.is_file():
            raise ImageError(f"image file not found: {str(path)!r}")
        return _open(path, f"file {str(path)!r}")
    if isinstance(image, (bytes, bytearray)):
        if not image:
            raise ImageError("image bytes are empty")
        return _open(io.BytesIO(bytes(image)), f"{len(image)} bytes")
    if isinstance(image, Image.Image):
        return _from_pil(image)
    if isinstance(image, np.ndarray):
        return _from_array(image)
    raise ImageError(
        f"unsupported image type {type(image).__name__}; "
        "pass a file path, encoded bytes, a PIL.Image.Image or a uint8 numpy array"
    )


def png_bytes(pixels: np.ndarray) -> bytes:
    """An RGB array as PNG bytes (lossless: :func:`load_image` gives back the same pixels).

    Fastest zlib level: a trace store keeps every distinct input image, and size matters less than
    the episode's latency.
    """
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


class ImageStore:
    """The images of one episode, by id. Thread-safe: tools may run in worker threads."""

    def __init__(self) -> None:
        self._images: dict[str, np.ndarray] = {}
        self._info: dict[str, ImageInfo] = {}
        self._lock = threading.Lock()

    def add(self, image: ImageInput, *, source: str = "user") -> str:
        """Store an image (anything :func:`load_image` accepts) and return its new id."""
        array = load_image(image)
        array.setflags(write=False)  # tools must make new images, never edit one in place
        with self._lock:
            image_id = f"img_{len(self._images)}"
            self._images[image_id] = array
            self._info[image_id] = ImageInfo(image_id, array.shape[1], array.shape[0], source)
        return image_id

    def get(self, image_id: str) -> np.ndarray:
        """The image with this id (read-only); a ``ToolError(ArgInvalid)`` naming the valid ids if absent."""
        with self._lock:
            if image_id in self._images:
                return self._images[image_id]
            known = ", ".join(self._images) or "none"
        raise ToolError(f"no image with id {image_id!r}; available image ids: {known}", ErrorType.ARG_INVALID)

    def info(self, image_id: str) -> ImageInfo:
        self.get(image_id)
        return self._info[image_id]

    def infos(self) -> list[ImageInfo]:
        with self._lock:
            return list(self._info.values())

    def __len__(self) -> int:
        return len(self._images)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._images
