"""``tiny_text``: fine print too small to read until it is cropped and zoomed (crop + resize + ocr).

A page carries a large heading and a few body lines, and somewhere a line of fine print (9-11 px
per em, bold) holding a code or a weight. The reference crops the fine print's box (with a
margin), zooms 4x and reads it.

Measured limit (``benchmarks/suite_quality.py`` prints it): easyocr is nearly scale-invariant for
small text (its recogniser rescales every detected line to 64 px), so on many pages OCR of the whole
image reads the fine print too. Below about 7 px easyocr reads nothing even after zooming, so there
is no size band where only the zoomed read works; the category is honest for a model that *looks*
at the image under a pixel budget (a VLM), and for OCR it mostly tests that the agent finds and
isolates the right line. Codes use letters and digits OCR does
not confuse with each other (no O/0, I/1, S/5, B/8, Z/2).
"""

from __future__ import annotations

import numpy as np

from regrpo.tasks import render
from regrpo.tasks.draft import Draft, calculated, choice
from regrpo.tasks.schema import AnswerSpec, ReferenceStep

__all__ = ["generate"]

_LETTERS = "ADEFHKMNPRTUXY"
"""No O/I/S/B/Z (read as digits), no C (read as "("), no V/W ("VV" reads as "W")."""
_DIGITS = "346789"
_FINE_FONTS = ("DejaVuSans-Bold.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSerif-Bold.ttf")
"""Bold faces only: at 9-11 px the regular strokes are a pixel wide and zooming cannot restore them."""
_HEADINGS = ("SPRING SALE", "NOTICE", "HOMEMADE JAM", "CITY MUSEUM", "GARDEN SEEDS", "CONCERT")
_BODY = ("Open every day", "Fresh and local", "Tickets at the door", "Thank you for visiting", "Since 1998")
_CODE_QUESTIONS = (
    "What is the lot code in the fine print?",
    "Read the tiny code printed on this page. What is it?",
    "There is a small reference code somewhere in the image. What does it say?",
)
_WEIGHT_QUESTIONS = (
    "The fine print gives a net weight in grams. How many kilograms is that?",
    "Convert the net weight in the small print to kilograms.",
)


def _code(rng: np.random.Generator) -> str:
    letters = "".join(str(c) for c in rng.choice(list(_LETTERS), size=2, replace=False))
    return letters + "".join(choice(rng, _DIGITS) for _ in range(4))


def generate(rng: np.random.Generator, difficulty: int) -> Draft:
    """A page with a tiny line holding a code (text answer) or a weight (grams → kg)."""
    width, height = int(rng.integers(560, 720)), int(rng.integers(400, 520))
    style, font_name = choice(rng, render.BACKGROUNDS), choice(rng, render.FONTS)
    canvas = render.background(rng, width, height, style)
    ink = render.ink_colour(rng)
    heading = choice(rng, _HEADINGS)
    block = render.render_block(canvas, [heading], font_name=font_name, size=48, colour=ink, origin=(30, 30))
    body = [str(x) for x in rng.choice(_BODY, size=2, replace=False)]
    block = render.render_block(block.image, body, font_name=font_name, size=24, colour=ink, origin=(30, 120))
    if rng.random() < 0.6:
        code = _code(rng)
        fine = f"{choice(rng, ('Lot', 'Ref', 'Code'))} {code}"
        question, answer = choice(rng, _CODE_QUESTIONS), AnswerSpec("text", code)
        final_expects, calc = [code], None
    else:
        grams = int(rng.integers(120, 990))
        fine = f"Net weight {grams} g"
        question = choice(rng, _WEIGHT_QUESTIONS)
        calc = f"{grams} / 1000"
        value, shown = calculated(calc)
        answer, final_expects = AnswerSpec("number", value), [str(grams)]
    size = 12 - difficulty  # 11, 10, 9 px per em
    fine_font = choice(rng, _FINE_FONTS)
    fine_width = render.text_width(fine, fine_font, size)
    x = int(rng.integers(20, width - fine_width - 20))
    y = int(rng.integers(height - 90, height - 20))
    block = render.render_block(
        block.image, [fine], font_name=fine_font, size=size, colour=ink, origin=(x, y)
    )
    image = render.add_noise(block.image, rng, sigma=(0.0, 3.0, 6.0)[difficulty - 1])
    x1, y1, x2, y2 = block.boxes[0]
    margin = 8
    box = [max(0, x1 - margin), max(0, y1 - margin), min(width, x2 + margin), min(height, y2 + margin)]
    reference = [
        ReferenceStep("crop", {"image": "img_0", "box": box}),
        ReferenceStep("resize", {"image": "img_1", "scale": 4.0}),
        ReferenceStep("ocr", {"image": "img_2"}, final_expects),
    ]
    if calc is not None:
        reference.append(ReferenceStep("calculator", {"expression": calc}, [shown]))
    meta = {
        "template": "code" if calc is None else "weight", "font": font_name, "fine_font": fine_font,
        "size": size, "background": style,
        "text": [fine], "fine_print_box": box, "page_text": [heading, *body],
    }  # fmt: skip
    return Draft(question, [image], answer, reference, meta)
