"""Loading images from what users hand us, and the per-episode ``ImageStore``."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from regrpo.errors import ErrorType, ImageError, InputError
from regrpo.tools import ImageInfo, ImageStore, ToolError, load_image

HEIGHT, WIDTH = 3, 5  # not square, so a swapped width and height shows


def _rgb() -> np.ndarray:
    """A (3, 5, 3) uint8 image whose every value differs."""
    return np.arange(HEIGHT * WIDTH * 3, dtype=np.uint8).reshape(HEIGHT, WIDTH, 3)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _assert_rgb(array: np.ndarray, expected: np.ndarray) -> None:
    assert array.dtype == np.uint8
    assert array.shape == (HEIGHT, WIDTH, 3)
    np.testing.assert_array_equal(array, expected)


# -- load_image: what it accepts ----------------------------------------------------------------------------


@pytest.mark.parametrize("as_type", [str, Path])
def test_a_png_file_loads_by_path(tmp_path: Path, as_type: type) -> None:
    path = tmp_path / "picture.png"
    Image.fromarray(_rgb()).save(path)
    _assert_rgb(load_image(as_type(path)), _rgb())


@pytest.mark.parametrize("as_type", [bytes, bytearray])
def test_encoded_bytes_load(as_type: type) -> None:
    _assert_rgb(load_image(as_type(_png(Image.fromarray(_rgb())))), _rgb())


def test_a_jpeg_loads_close_to_its_pixels() -> None:
    buffer = io.BytesIO()
    flat = np.full((HEIGHT, WIDTH, 3), (200, 40, 90), np.uint8)
    Image.fromarray(flat).save(buffer, format="JPEG", quality=95)
    loaded = load_image(buffer.getvalue())
    assert loaded.shape == (HEIGHT, WIDTH, 3)
    assert np.abs(loaded.astype(int) - flat).max() <= 8  # lossy


def test_a_pil_rgba_image_drops_its_alpha() -> None:
    rgba = np.dstack([_rgb(), np.full((HEIGHT, WIDTH), 7, np.uint8)])
    _assert_rgb(load_image(Image.fromarray(rgba, mode="RGBA")), _rgb())


def test_a_pil_grayscale_image_becomes_three_equal_channels() -> None:
    gray = np.arange(HEIGHT * WIDTH, dtype=np.uint8).reshape(HEIGHT, WIDTH) * 10
    _assert_rgb(load_image(Image.fromarray(gray, mode="L")), np.dstack([gray, gray, gray]))


def test_a_pil_palette_image_is_converted_to_its_colours() -> None:
    palette = Image.fromarray(_rgb()).quantize(colors=256)
    assert palette.mode == "P"
    _assert_rgb(load_image(palette), np.asarray(palette.convert("RGB")))


@pytest.mark.parametrize(
    ("array", "expected"),
    [
        (_rgb(), _rgb()),
        (np.dstack([_rgb(), np.zeros((HEIGHT, WIDTH), np.uint8)]), _rgb()),  # RGBA: alpha dropped
        (_rgb()[:, :, 0], np.dstack([_rgb()[:, :, 0]] * 3)),  # HxW gray
        (np.asfortranarray(_rgb()), _rgb()),  # any memory layout
    ],
    ids=["HxWx3", "HxWx4", "HxW", "fortran-order"],
)
def test_uint8_numpy_arrays_load(array: np.ndarray, expected: np.ndarray) -> None:
    loaded = load_image(array)
    _assert_rgb(loaded, expected)
    assert loaded.flags.c_contiguous


def test_the_loaded_array_is_a_copy_the_caller_cannot_change() -> None:
    mine = _rgb()
    loaded = load_image(mine)
    mine[0, 0] = (255, 255, 255)
    assert not np.shares_memory(mine, loaded)
    _assert_rgb(loaded, _rgb())


# -- load_image: what it refuses, and says why ---------------------------------------------------------------


def _refusal(image: Any) -> str:
    with pytest.raises(ImageError) as caught:
        load_image(image)
    assert isinstance(caught.value, InputError) and isinstance(caught.value, ValueError)
    return str(caught.value)


def test_a_missing_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.png"
    assert _refusal(missing) == f"image file not found: {str(missing)!r}"
    assert _refusal(str(tmp_path)).startswith("image file not found")  # a folder is not an image file


def test_a_text_file_named_png_cannot_be_decoded(tmp_path: Path) -> None:
    fake = tmp_path / "fake.png"
    fake.write_text("this is not a picture\n")
    message = _refusal(fake)
    assert message.startswith(f"cannot decode file {str(fake)!r} as an image")


def test_a_truncated_png_cannot_be_decoded() -> None:
    data = _png(Image.fromarray(_rgb()))
    assert "cannot decode" in _refusal(data[: len(data) // 2])


def test_empty_bytes_are_refused() -> None:
    assert _refusal(b"") == "image bytes are empty"
    assert "cannot decode 5 bytes as an image" in _refusal(b"hello")


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.uint16, np.bool_])
def test_arrays_that_are_not_uint8_are_refused_with_the_fix(dtype: type) -> None:
    message = _refusal(np.zeros((HEIGHT, WIDTH, 3), dtype=dtype))
    assert f"must have dtype uint8 (0-255), got {np.dtype(dtype)}" in message
    assert ".astype(np.uint8)" in message  # says how to fix it


@pytest.mark.parametrize(
    "shape",
    [
        (HEIGHT, WIDTH, 2),
        (HEIGHT, WIDTH, 1),
        (HEIGHT, WIDTH, 5),
        (WIDTH,),
        (2, HEIGHT, WIDTH, 3),
        (0, WIDTH, 3),
    ],
)
def test_arrays_of_the_wrong_shape_are_refused(shape: tuple[int, ...]) -> None:
    message = _refusal(np.zeros(shape, np.uint8))
    assert message.startswith("numpy images must be HxW, HxWx3 (RGB) or HxWx4 (RGBA), got shape")


@pytest.mark.parametrize(
    ("image", "name"),
    [(42, "int"), ({"path": "a.png"}, "dict"), (None, "NoneType"), ([[0, 0], [0, 0]], "list")],
)
def test_unsupported_types_are_refused_listing_what_is_accepted(image: Any, name: str) -> None:
    message = _refusal(image)
    assert message.startswith(f"unsupported image type {name}; ")
    assert "file path, encoded bytes, a PIL.Image.Image or a uint8 numpy array" in message


# -- ImageStore ----------------------------------------------------------------------------------------------


def test_ids_are_sequential_and_infos_give_size_and_source(tmp_path: Path) -> None:
    path = tmp_path / "wide.png"
    Image.new("RGB", (40, 10)).save(path)
    images = ImageStore()
    assert len(images) == 0 and images.infos() == []
    assert images.add(_rgb()) == "img_0"
    assert images.add(path) == "img_1"
    assert images.add(Image.new("L", (2, 7)), source="crop") == "img_2"
    assert images.infos() == [
        ImageInfo("img_0", width=WIDTH, height=HEIGHT, source="user"),
        ImageInfo("img_1", width=40, height=10, source="user"),
        ImageInfo("img_2", width=2, height=7, source="crop"),
    ]
    assert images.info("img_1").width == 40
    assert len(images) == 3
    assert "img_2" in images and "img_3" not in images


def test_stored_images_are_read_only() -> None:
    images = ImageStore()
    stored = images.get(images.add(_rgb()))
    with pytest.raises(ValueError, match="read-only"):
        stored[0, 0, 0] = 1


def test_the_store_keeps_its_own_copy_of_a_callers_array() -> None:
    mine = _rgb()
    images = ImageStore()
    image_id = images.add(mine)
    mine[:] = 0  # the caller's array stays theirs to change
    assert mine.flags.writeable
    _assert_rgb(images.get(image_id), _rgb())


def test_a_refused_image_adds_nothing() -> None:
    images = ImageStore()
    with pytest.raises(ImageError):
        images.add(np.zeros((2, 2), np.float32))
    assert len(images) == 0
    assert images.add(_rgb()) == "img_0"  # the id was not used up


def test_an_unknown_id_is_a_tool_error_listing_the_ids() -> None:
    images = ImageStore()
    with pytest.raises(ToolError) as empty:
        images.get("img_0")
    assert empty.value.message == "no image with id 'img_0'; available image ids: none"
    images.add(_rgb())
    images.add(_rgb())
    with pytest.raises(ToolError) as caught:
        images.info("img_7")
    assert caught.value.message == "no image with id 'img_7'; available image ids: img_0, img_1"
    assert caught.value.kind is ErrorType.ARG_INVALID
