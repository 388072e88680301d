"""The demo's tasks: small, generated from a seed, each needing a tool and having a checkable answer.

Two kinds, so the demo exercises the calculator and the image tools with no OCR or detector:
arithmetic the weak default model gets wrong by heart (it said 17*23 = 341), and questions about an
image's geometry after an edit (crop, rotate, resize), answerable only by calling the tool and reading
the new size it reports. The full task suite (receipts, counting, rotated text, lookups) is
``regrpo.tasks`` in a later milestone.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np

__all__ = ["DemoTask", "demo_tasks"]


@dataclass(frozen=True)
class DemoTask:
    """A question, its images, and the reference answer the demo scores against."""

    question: str
    answer: str
    category: str
    images: list[np.ndarray] = field(default_factory=list)


def _arithmetic(rng: random.Random) -> DemoTask:
    a, b, c = rng.randint(12, 99), rng.randint(12, 99), rng.randint(2, 9)
    form = rng.choice(["{a} * {b}", "({a} + {b}) * {c}", "{a} * {b} - {c}"])
    expression = form.format(a=a, b=b, c=c)
    value = {"{a} * {b}": a * b, "({a} + {b}) * {c}": (a + b) * c, "{a} * {b} - {c}": a * b - c}[form]
    phrasing = rng.choice(["What is {e}?", "Compute {e}.", "Calculate {e} exactly."])
    return DemoTask(phrasing.format(e=expression), str(value), "arithmetic")


def _canvas(rng: random.Random) -> np.ndarray:
    height, width = rng.randrange(120, 400, 10), rng.randrange(160, 640, 10)
    image = np.full((height, width, 3), 255, dtype=np.uint8)
    image[height // 4 : height // 2, width // 4 : width // 2] = rng.choice([(200, 40, 40), (40, 40, 200)])
    return image


def _image_geometry(rng: random.Random) -> DemoTask:
    image = _canvas(rng)
    height, width = image.shape[:2]
    kind = rng.choice(["rotate", "crop", "resize"])
    if kind == "rotate":
        question, answer = (
            "Rotate img_0 by 90 degrees. What is the width of the rotated image in pixels?",
            height,
        )
    elif kind == "crop":
        x2, y2 = rng.randrange(40, width, 10), rng.randrange(40, height, 10)
        question = f"Crop img_0 to the box [0, 0, {x2}, {y2}]. What is the height of the crop in pixels?"
        answer = y2
    else:
        question, answer = "Resize img_0 by a scale of 2. What is the new width in pixels?", width * 2
    return DemoTask(question, str(answer), f"image_{kind}", [image])


def demo_tasks(n: int = 6, seed: int = 0) -> list[DemoTask]:
    """``n`` tasks, alternating arithmetic and image geometry, the same for the same seed."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    rng = random.Random(seed)
    return [(_arithmetic if i % 2 == 0 else _image_geometry)(rng) for i in range(n)]
