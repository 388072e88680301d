"""``rotated_text``: a label photographed sideways or upside down (rotate + ocr).

The whole picture is turned by a quarter or half turn (difficulty 1-2) or by an odd angle
(difficulty 3, 60°-300° away from upright), so OCR on the image as given fails; the reference
rotates it back (``rotate(img_0, -angle)``: both PIL's and our tool's positive angle turn
counter-clockwise) and reads the label. The answer is a code or a word, checked as text.

The angle is not taken from the generator: the reference first reads the image as given, and the
``ocr`` tool's ``upright_angle`` (the text lines' measured skew, upright or upside down settled by
reading both) is the angle it rotates by (``derived_from``); it is within 1° of ``-angle``.

Held-out tasks (``variant="holdout"``) are turned by angles no training task uses: training turns
by 90/180/270° or (difficulty 3) 60-120° and 240-300°; held-out labels by 135/225° or (difficulty
3) 125-235° except 180°, i.e. obliquely upside down. They use the STIX faces and question phrasings
no training task uses.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from regrpo.tasks import render
from regrpo.tasks.draft import Draft, Variant, choice
from regrpo.tasks.schema import AnswerSpec, ReferenceStep
from regrpo.tools.ocr import MAX_SIDE
from regrpo.tools.text_layout import text_skew_degrees

__all__ = ["generate", "upright_angle"]

_LETTERS = "ADEFHKMNPRTUXY"
"""No O/I/S/B/Z (read as digits), no C (read as "("), no V/W ("VV" reads as "W")."""
_DIGITS = "346789"
_TITLES = ("PARCEL", "LUGGAGE TAG", "SHIPPING LABEL", "STORAGE BOX", "SAMPLE")
_CITIES = ("HARBOR", "MEADOW", "CANYON", "WILLOW", "SUMMIT", "MARKET", "GARDEN", "ISLAND")
_QUESTIONS: dict[Variant, dict[str, tuple[str, ...]]] = {
    "train": {
        "code": (
            "What is the tracking code on this label?",
            "Read the code printed on the label.",
            "Which code is written on the tag in the photo?",
        ),
        "destination": (
            "To which destination is this label addressed?",
            "What destination is printed on the label?",
        ),
    },
    "holdout": {
        "code": (
            "What reference follows No. on this sticker?",
            "Give the identifier shown on the tilted label.",
        ),
        "destination": (
            "Where is this package going, according to its label?",
            "Name the place the label says to send this to.",
        ),
    },
}


def _angle(rng: np.random.Generator, difficulty: int, variant: Variant) -> float:
    """How far the label is turned (degrees, counter-clockwise); the two variants' sets are disjoint."""
    if variant == "train":
        if difficulty < 3:
            return float(choice(rng, (90, 180, 270)))
        degrees = int(rng.integers(0, 122))  # 60-120 or 240-300
        return float(60 + degrees if degrees < 61 else 179 + degrees)
    if difficulty < 3:
        return float(choice(rng, (135, 225)))
    degrees = int(rng.integers(125, 235))
    return float(degrees if degrees < 180 else degrees + 1)  # 125-179, 181-235


def upright_angle(image: np.ndarray, angle: float) -> int:
    """The ``upright_angle`` the ``ocr`` tool reports for a label turned by ``angle``.

    The tool measures the lines' skew (a pure function of the pixels, computed here the same way)
    and reads both turns that level them, ``-skew`` and ``180 - skew``; of those two the generator
    knows which is right (the one nearer ``-angle``), the tool finds it by reading. The reference
    test checks, with the real tool, that they agree.
    """
    skew = text_skew_degrees(image, MAX_SIDE)
    if skew is None:  # never for a rendered label; keep the reference well formed regardless
        skew = int(round(angle)) % 180
    turns = [(t + 180) % 360 - 180 for t in (-skew, 180 - skew)]
    return min(turns, key=lambda t: abs((t + angle + 180) % 360 - 180))


def generate(rng: np.random.Generator, difficulty: int, variant: Variant = "train") -> Draft:
    """A rotated label with a title, a code and a destination; the question asks for one of them."""
    letters = "".join(str(c) for c in rng.choice(list(_LETTERS), size=2, replace=False))
    code = letters + "".join(choice(rng, _DIGITS) for _ in range(4))
    city = choice(rng, _CITIES)
    lines = [choice(rng, _TITLES), f"No. {code}", f"To: {city}"]
    size = int(rng.integers(30, 38)) - 2 * (difficulty - 1)
    font_name, style = choice(rng, render.TEXT_FONTS[variant]), choice(rng, render.BACKGROUNDS)
    width = max(render.text_width(line, font_name, size) for line in lines) + 60
    height = int(size * 1.6 * len(lines)) + 50
    block = render.text_card(
        rng,
        lines,
        width=width,
        height=height,
        style=style,
        font_name=font_name,
        size=size,
        origin=(30, 25),
        spacing=1.6,
    )
    angle = _angle(rng, difficulty, variant)
    fill = tuple(int(v) for v in block.image[0, 0])
    turned = Image.fromarray(block.image).rotate(
        angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=fill
    )
    image = render.add_noise(np.asarray(turned, dtype=np.uint8), rng, sigma=(0.0, 3.0, 6.0)[difficulty - 1])
    asked = choice(rng, ("code", "code", "destination"))
    answer = code if asked == "code" else city
    reference = [
        ReferenceStep("ocr", {"image": "img_0"}),
        ReferenceStep(
            "rotate",
            {"image": "img_0", "angle": upright_angle(image, angle)},
            derived_from={"angle": "0.upright_angle"},
        ),
        ReferenceStep("ocr", {"image": "img_1"}, [answer], derived_from={"image": "1.image"}),
    ]
    phrasing = choice(rng, _QUESTIONS[variant][asked])
    meta = {
        "template": asked,
        "phrasing": phrasing,
        "font": font_name,
        "size": size,
        "background": style,
        "angle": angle,
        "text": lines,
    }
    return Draft(phrasing, [image], AnswerSpec("text", answer), reference, meta)
