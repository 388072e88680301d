"""``ocr``: real easyocr with the offline English weights reads rendered text, in full-image coordinates."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from typing import Any

import cv2
import numpy as np
import pytest

from regrpo.errors import ErrorType, InputError
from regrpo.tools import ImageStore, Toolbox, ToolContext
from regrpo.tools.ocr import (
    MAX_SIDE,
    OcrEngine,
    OcrLine,
    make_ocr_tool,
    reading_order,
    shared_ocr_engine,
)

LINES = [("TOTAL 42.50 USD", (30, 80), 1.4), ("Invoice 7731", (300, 190), 1.0)]


def _text_image() -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """A white 640x240 image with two lines of black text, and each line's true box."""
    image = np.full((240, 640, 3), 255, dtype=np.uint8)
    boxes = []
    for text, (x, y), scale in LINES:
        cv2.putText(image, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3)
        (w, h), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 3)
        ys, xs = np.nonzero(
            image[max(0, y - h - 10) : y + baseline + 10, max(0, x - 10) : x + w + 10, 0] < 128
        )
        boxes.append(
            (x - 10 + xs.min(), y - h - 10 + ys.min(), x - 10 + xs.max() + 1, y - h - 10 + ys.max() + 1)
        )
    return image, boxes


def _iou(a: list[int] | tuple[int, ...], b: tuple[int, ...]) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _call(arguments: dict[str, Any], image: np.ndarray, engine: OcrEngine | None = None) -> Any:
    images = ImageStore()
    images.add(image)
    toolbox = Toolbox([make_ocr_tool(engine)])
    return asyncio.run(toolbox.call("ocr", {"image": "img_0", **arguments}, ToolContext(images=images)))


def test_reading_order_is_rows_then_left_to_right():
    right = OcrLine("b", (200, 10, 260, 30), 0.9)
    left = OcrLine("a", (10, 12, 80, 32), 0.9)
    below = OcrLine("c", (5, 60, 50, 80), 0.9)
    assert [line.text for line in reading_order([below, right, left])] == ["a", "b", "c"]


def test_importing_the_tools_loads_no_model_library():
    code = (
        "import sys; from regrpo.tools import default_tools; tools = default_tools(); "
        "print(sorted(m for m in ('easyocr', 'ultralytics', 'torch', 'bm25s') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.slow
def test_reads_rendered_text_with_boxes_in_reading_order():
    image, boxes = _text_image()
    outcome = _call({}, image)
    assert outcome.ok, outcome.message
    assert outcome.output["text"] == "TOTAL 42.50 USD\nInvoice 7731"
    assert outcome.output.keys() == {"text", "lines"}  # upright, full resolution: no layout hints
    lines = outcome.output["lines"]
    assert [line["text"] for line in lines] == ["TOTAL 42.50 USD", "Invoice 7731"]
    for line, truth in zip(lines, boxes, strict=True):
        assert _iou(line["box"], truth) > 0.6
        assert 0.5 < line["confidence"] <= 1.0


@pytest.mark.slow
def test_region_boxes_map_back_to_full_image_coordinates():
    image, boxes = _text_image()
    region = [280, 140, 600, 230]
    outcome = _call({"region": region}, image)
    assert outcome.ok, outcome.message
    assert outcome.output["text"] == "Invoice 7731"  # the other line lies outside the region
    (line,) = outcome.output["lines"]
    assert _iou(line["box"], boxes[1]) > 0.6  # full-image pixels, not the region's


@pytest.mark.slow
def test_small_regions_are_upscaled_and_mapped_back():
    image = np.full((120, 400, 3), 255, dtype=np.uint8)
    cv2.putText(image, "A17 B", (210, 70), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 2)
    outcome = _call({"region": [200, 50, 290, 80]}, image)  # 90x30 pixels
    assert outcome.ok, outcome.message
    (line,) = outcome.output["lines"]
    assert line["text"].replace(" ", "") == "A17B"
    x1, y1, x2, y2 = line["box"]
    assert 200 <= x1 < x2 <= 290 and 50 <= y1 < y2 <= 80


@pytest.mark.slow
def test_a_repeated_read_of_the_same_pixels_comes_from_the_cache():
    image, _ = _text_image()
    engine = OcrEngine(cache_size=2)
    first = engine.read(image)
    again = engine.read(image.copy())  # same pixels, another array
    assert again == first and engine.reads == 1
    changed = image.copy()
    changed[0, 0] = 0  # one pixel differs: a new read
    engine.read(changed)
    assert engine.reads == 2
    engine.read(image, offset=(5, 0))  # a different offset is a different result
    assert engine.reads == 3
    engine.read(image)  # evicted by the two reads since (cache_size=2)
    assert engine.reads == 4
    uncached = OcrEngine(cache_size=0)
    assert uncached.read(image) == first and uncached.read(image) == first and uncached.reads == 2
    with pytest.raises(InputError, match="cache_size"):
        OcrEngine(cache_size=-1)


@pytest.mark.slow
def test_no_text_is_an_empty_result_and_bad_regions_are_errors():
    blank = np.full((200, 300, 3), 200, dtype=np.uint8)
    outcome = _call({}, blank)
    assert outcome.ok and outcome.output == {"text": "", "lines": []}
    outside = _call({"region": [400, 10, 500, 50]}, blank)
    assert not outside.ok and outside.error_type == ErrorType.GROUNDING_DRIFT
    malformed = _call({"region": [50, 50, 10, 10]}, blank)
    assert not malformed.ok and malformed.error_type == ErrorType.ARG_INVALID
    short = _call({"region": [1, 2]}, blank)
    assert not short.ok and short.error_type == ErrorType.ARG_INVALID


@pytest.mark.slow
def test_one_reader_is_built_however_many_threads_race_for_it():
    builds = []

    class CountingEngine(OcrEngine):
        def _build(self) -> Any:
            builds.append(threading.get_ident())
            return super()._build()

    engine = CountingEngine()
    assert not engine.started
    start = threading.Barrier(4)
    readers: list[Any] = []

    def first_use() -> None:
        start.wait()
        readers.append(engine.get())

    threads = [threading.Thread(target=first_use) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(builds) == 1 and len({id(r) for r in readers}) == 1 and engine.started
    assert shared_ocr_engine() is shared_ocr_engine()


def test_read_scale_bounds_the_working_resolution():
    engine = OcrEngine(max_side=1280)  # builds no reader
    assert engine.read_scale(2000, 3000) == pytest.approx(1280 / 3000)
    assert engine.read_scale(400, 1280) == 1 and engine.read_scale(400, 600) == 1
    assert engine.read_scale(30, 200) == 3  # small regions are upscaled ...
    assert engine.read_scale(20, 1000) == pytest.approx(1.28)  # ... but never past max_side
    assert OcrEngine().max_side == MAX_SIDE == 1280
    with pytest.raises(InputError, match="max_side"):
        OcrEngine(max_side=10)
    assert "900 px" in make_ocr_tool(OcrEngine(max_side=900)).description  # the model is told


def _large_page() -> tuple[np.ndarray, tuple[int, int, int, int], tuple[int, int, int, int]]:
    """A 3000x900 page: a big heading and a line of fine print (about 12 px caps), and their ink boxes."""
    image = np.full((900, 3000, 3), 255, dtype=np.uint8)
    cv2.putText(image, "SPRING SALE", (200, 250), cv2.FONT_HERSHEY_SIMPLEX, 5.0, (0, 0, 0), 12)
    cv2.putText(image, "LOT 4729", (2100, 700), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 2)

    def ink(x1: int, y1: int, x2: int, y2: int) -> tuple[int, int, int, int]:
        ys, xs = np.nonzero(image[y1:y2, x1:x2, 0] < 128)
        return x1 + xs.min(), y1 + ys.min(), x1 + xs.max() + 1, y1 + ys.max() + 1

    return image, ink(150, 50, 1400, 320), ink(2080, 670, 2200, 720)


@pytest.mark.slow
def test_large_images_are_read_at_max_side_with_boxes_in_full_image_pixels():
    image, heading_box, fine_box = _large_page()
    whole = _call({}, image)
    assert whole.ok, whole.message
    assert "SPRING SALE" in whole.output["text"]
    assert "4729" not in whole.output["text"].replace(" ", "")  # fine print is ~5 px at 1280 px
    (small,) = whole.output["small_text"]  # ... but its box is reported, ready to crop
    assert (
        small[0] <= fine_box[0]
        and small[1] <= fine_box[1]
        and small[2] >= fine_box[2]
        and small[3] >= fine_box[3]
    )
    assert "4729" in _call({}, image[small[1] : small[3], small[0] : small[2]]).output["text"].replace(
        " ", ""
    )
    heading = next(line for line in whole.output["lines"] if "SPRING" in line["text"])
    assert _iou(heading["box"], heading_box) > 0.6  # mapped back from the downscaled read
    region = [fine_box[0] - 20, fine_box[1] - 20, fine_box[2] + 20, fine_box[3] + 20]
    zoomed = _call({"region": region}, image)  # a small region is read at full resolution
    assert zoomed.ok, zoomed.message
    (line,) = zoomed.output["lines"]
    assert line["text"].replace(" ", "") == "LOT4729"
    assert _iou(line["box"], fine_box) > 0.5
    crop = image[region[1] : region[3], region[0] : region[2]]
    assert "4729" in _call({}, crop).output["text"].replace(" ", "")


@pytest.mark.slow
@pytest.mark.parametrize("turn", [90, 180, 270, 118])
def test_sideways_text_gets_the_angle_that_turns_it_upright(turn):
    """A label turned by ``turn`` reads as garbage; ``upright_angle`` is the rotation that reads it."""
    from PIL import Image

    from regrpo.tools.image_ops import rotated_array

    label = np.full((170, 460, 3), 250, dtype=np.uint8)
    for text, y in (("PARCEL", 50), ("No. KX4821", 100), ("To: HARBOR", 150)):
        cv2.putText(label, text, (20, y), cv2.FONT_HERSHEY_SIMPLEX, 1.3, (20, 20, 20), 3)
    image = np.asarray(Image.fromarray(label).rotate(turn, expand=True, fillcolor=(250, 250, 250)))
    outcome = _call({}, image)
    assert outcome.ok, outcome.message
    angle = outcome.output["upright_angle"]
    assert abs((angle + turn + 180) % 360 - 180) <= 1, angle
    upright = _call({}, rotated_array(image, angle)).output
    assert "KX4821" in upright["text"].replace(" ", "") and "upright_angle" not in upright
