"""``text_layout``: the skew of text lines and the boxes of fine print, measured on the suite's images.

No OCR model runs here: both analyses are OpenCV on the pixels, which is what lets a task generator
compute exactly what the ``ocr`` tool will report (``tests/tasks/test_reference_runs.py`` checks the
real tool agrees).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from regrpo.tasks.suite import generate_task
from regrpo.tools.ocr import MAX_SIDE
from regrpo.tools.text_layout import small_text_boxes, text_skew_degrees


def _label(angle: float) -> np.ndarray:
    task, images = generate_task("rotated_text", 1, 3, "t")
    upright = np.asarray(
        Image.fromarray(images[0]).rotate(-task.meta["angle"], expand=True, fillcolor=(255,) * 3)
    )
    return np.asarray(Image.fromarray(upright).rotate(angle, expand=True, fillcolor=(255,) * 3))


def test_skew_of_a_turned_label_is_its_angle_modulo_180():
    for angle in (0, 17, 90, 135, 200, 271):
        assert text_skew_degrees(_label(angle), MAX_SIDE) in {
            angle % 180,
            (angle + 1) % 180,
            (angle - 1) % 180,
        }
    assert text_skew_degrees(np.full((80, 120, 3), 240, dtype=np.uint8), MAX_SIDE) is None


def test_skew_of_every_rotated_text_label_is_within_a_degree():
    for seed in range(4):
        for difficulty in (1, 2, 3):
            task, images = generate_task("rotated_text", difficulty, seed, "t")
            skew, angle = text_skew_degrees(images[0], MAX_SIDE), task.meta["angle"]
            assert skew is not None and min((skew - angle) % 180, (angle - skew) % 180) <= 1, (seed, angle)


def test_fine_print_of_tiny_text_pages_is_boxed_alone():
    for seed in range(4):
        for difficulty in (1, 2, 3):
            task, images = generate_task("tiny_text", difficulty, seed, "t")
            fx1, fy1, fx2, fy2 = task.meta["fine_print_box"]  # the ink box plus an 8 px margin
            (box,) = small_text_boxes(images[0], MAX_SIDE)
            assert box[0] <= fx1 + 8 and box[1] <= fy1 + 8 and box[2] >= fx2 - 8 and box[3] >= fy2 - 8
            assert (box[2] - box[0]) * (box[3] - box[1]) < 2 * (fx2 - fx1) * (fy2 - fy1)


def test_images_read_at_full_resolution_have_no_small_text():
    task, images = generate_task("tiny_text", 1, 0, "t")
    x1, y1, x2, y2 = task.meta["fine_print_box"]
    crop = images[0][y1 - 40 : y2 + 40, x1 - 40 : x2 + 40]
    assert small_text_boxes(crop, MAX_SIDE) == []  # the crop is read as it is: nothing is too small
    receipt = generate_task("receipt", 3, 0, "t")[1][0]
    assert small_text_boxes(receipt, MAX_SIDE) == []
