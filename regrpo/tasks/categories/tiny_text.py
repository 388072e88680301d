"""``tiny_text``: fine print on a large page, unreadable until it is cropped (crop + ocr).

A page 2400-3000 px wide carries a large heading, body lines and somewhere in its lower half one
line of bold fine print (a code or a weight). The ``ocr`` tool reads at a bounded working
resolution (``regrpo.tools.ocr.MAX_SIDE``, 1280 px on the longer side, as OCR services and vision
models do), so on the whole page the fine print is about half its size, a few pixels tall, and
easyocr reads nothing there; the crop of its box is far under 1280 px and is read at full
resolution. The reference reads the page first: the ``ocr`` tool lists the boxes of lines too small
to read at its working resolution (``small_text``, found in the full-resolution pixels by
:func:`regrpo.tools.text_layout.small_text_boxes`), and the reference crops the one over the fine
print (``derived_from``), never a box only the generator knows; then it reads the crop.

Sizes were tuned with real easyocr (``benchmarks/suite_quality.py`` prints both rates): at 12 px per
em the crop is misread on 3/10 pages (bold mono "M" reads as "I"), at 14 px it is read 10/10; the
whole page reads 0/10 at 14 px, about 1 in 5 at 16 px (the narrower pages) and 5/10 at 18 px. So the
fine print is 15 px (difficulty 1) or 14 px (2-3), about 6-7 px at the working resolution; harder
tasks add noise. A ``resize`` step is left out: the ``ocr`` tool already
upscales a region whose short side is under 64 px, and crop + 4x zoom + ocr measured the same as
crop + ocr on every page tried; zooming still helps an agent that looks at the crop itself.

Noise (difficulty 2-3) covers a full-width band around the fine print rather than the page: noise
over 5 Mpx would make each PNG megabytes, and the page is plain, a gradient or ruled (no "paper"
texture) for the same reason. Codes use letters and digits OCR does not confuse with each other (no
O/0, I/1, S/5, B/8, Z/2).

Held-out tasks (``variant="holdout"``) put the fine print in the page's top-right corner (training:
anywhere in the lower half), set the heading and body in the STIX faces, and ask with question
phrasings no training task uses. The fine print keeps the bold DejaVu faces its sizes were tuned on.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from regrpo.tasks import render
from regrpo.tasks.draft import Draft, Variant, calculated, choice
from regrpo.tasks.schema import AnswerSpec, ReferenceStep
from regrpo.tools.ocr import MAX_SIDE
from regrpo.tools.text_layout import small_text_boxes

__all__ = ["generate"]

_LETTERS = "ADEFHKMNPRTUXY"
"""No O/I/S/B/Z (read as digits), no C (read as "("), no V/W ("VV" reads as "W")."""
_DIGITS = "346789"
_FINE_FONTS = ("DejaVuSans-Bold.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSerif-Bold.ttf")
"""Bold faces only: at fine-print sizes the regular strokes are a pixel wide."""
_PAGE_WIDTH = (2400, 3001)
_PAGE_HEIGHT = (1500, 1901)
_PAGE_BACKGROUNDS = ("plain", "gradient", "ruled")
"""No "paper": per-pixel texture over a 3000 px page makes a PNG of megabytes."""
_FINE_SIZE = {1: 15, 2: 14, 3: 14}
"""Fine print pixels per em by difficulty."""
_NOISE_BAND = 40
"""Difficulty noise covers a full-width band this far around the fine print (all over: PNGs of MBs)."""
_HEADINGS = ("SPRING SALE", "NOTICE", "HOMEMADE JAM", "CITY MUSEUM", "GARDEN SEEDS", "CONCERT")
_BODY = ("Open every day", "Fresh and local", "Tickets at the door", "Thank you for visiting", "Since 1998")
_QUESTIONS: dict[Variant, dict[str, tuple[str, ...]]] = {
    "train": {
        "code": (
            "What is the lot code in the fine print?",
            "Read the tiny code printed on this page. What is it?",
            "There is a small reference code somewhere in the image. What does it say?",
        ),
        "weight": (
            "The fine print gives a net weight in grams. How many kilograms is that?",
            "Convert the net weight in the small print to kilograms.",
        ),
    },
    "holdout": {
        "code": (
            "Which code is hidden in the small letters on this poster?",
            "Somewhere on this sheet a short code is printed very small. Report it.",
        ),
        "weight": (
            "What does the item weigh in kg, going by the smallest text on the page?",
            "Express the gram weight printed in tiny type as kilograms.",
        ),
    },
}


def _code(rng: np.random.Generator) -> str:
    letters = "".join(str(c) for c in rng.choice(list(_LETTERS), size=2, replace=False))
    return letters + "".join(choice(rng, _DIGITS) for _ in range(4))


def _overlap(box: Sequence[int], ink: Sequence[int]) -> float:
    """The fraction of ``ink``'s area inside ``box`` (both ``[x1, y1, x2, y2]``)."""
    ix = max(0, min(box[2], ink[2]) - max(box[0], ink[0]))
    iy = max(0, min(box[3], ink[3]) - max(box[1], ink[1]))
    return ix * iy / max(1, (ink[2] - ink[0]) * (ink[3] - ink[1]))


def _fine_origin(
    rng: np.random.Generator, variant: Variant, page: tuple[int, int], fine_width: int
) -> tuple[int, int]:
    """Where the fine print starts: anywhere in the lower half (train) or the top-right corner (held out).

    The corner lies right of the heading and body (which end before x = 1100 on a page at least
    2400 px wide) and above the page's middle.
    """
    width, height = page
    if variant == "train":
        return int(rng.integers(60, width - fine_width - 60)), int(rng.integers(height // 2, height - 60))
    return (
        int(rng.integers(width * 2 // 3, width - fine_width - 60)),
        int(rng.integers(60, height // 2 - 60)),
    )


def generate(rng: np.random.Generator, difficulty: int, variant: Variant = "train") -> Draft:
    """A large page with a tiny line holding a code (text answer) or a weight (grams → kg)."""
    width, height = int(rng.integers(*_PAGE_WIDTH)), int(rng.integers(*_PAGE_HEIGHT))
    style, font_name = choice(rng, _PAGE_BACKGROUNDS), choice(rng, render.TEXT_FONTS[variant])
    canvas = render.background(rng, width, height, style)
    ink = render.ink_colour(rng)
    heading = choice(rng, _HEADINGS)
    block = render.render_block(canvas, [heading], font_name=font_name, size=120, colour=ink, origin=(80, 80))
    body = [str(x) for x in rng.choice(_BODY, size=3, replace=False)]
    block = render.render_block(block.image, body, font_name=font_name, size=56, colour=ink, origin=(80, 300))
    if rng.random() < 0.6:
        code = _code(rng)
        fine = f"{choice(rng, ('Lot', 'Ref', 'Code'))} {code}"
        question, answer = choice(rng, _QUESTIONS[variant]["code"]), AnswerSpec("text", code)
        final_expects, calc = [code], None
    else:
        grams = int(rng.integers(120, 990))
        fine = f"Net weight {grams} g"
        question = choice(rng, _QUESTIONS[variant]["weight"])
        calc = f"{grams} / 1000"
        value, shown = calculated(calc)
        answer, final_expects = AnswerSpec("number", value), [str(grams)]
    size = _FINE_SIZE[difficulty]
    fine_font = choice(rng, _FINE_FONTS)
    fine_width = render.text_width(fine, fine_font, size)
    x, y = _fine_origin(rng, variant, (width, height), fine_width)
    block = render.render_block(
        block.image, [fine], font_name=fine_font, size=size, colour=ink, origin=(x, y)
    )
    x1, y1, x2, y2 = block.boxes[0]
    image = block.image
    band = slice(max(0, y1 - _NOISE_BAND), min(height, y2 + _NOISE_BAND))
    image[band] = render.add_noise(image[band], rng, sigma=(0.0, 3.0, 6.0)[difficulty - 1])
    margin = 8
    box = [max(0, x1 - margin), max(0, y1 - margin), min(width, x2 + margin), min(height, y2 + margin)]
    seen = small_text_boxes(image, MAX_SIDE)  # what the ocr tool will list as small_text
    k = next((i for i, b in enumerate(seen) if _overlap(b, (x1, y1, x2, y2)) > 0.5), None)
    crop_box = list(seen[k]) if k is not None else box  # (None never measured; run_reference says so)
    reference = [
        ReferenceStep("ocr", {"image": "img_0"}),
        ReferenceStep(
            "crop", {"image": "img_0", "box": crop_box},
            derived_from={} if k is None else {"box": f"0.small_text.{k}"},
        ),
        ReferenceStep("ocr", {"image": "img_1"}, final_expects, derived_from={"image": "1.image"}),
    ]  # fmt: skip
    if calc is not None:
        reference.append(ReferenceStep("calculator", {"expression": calc}, [shown]))
    meta = {
        "template": "code" if calc is None else "weight", "phrasing": question, "font": font_name,
        "fine_font": fine_font, "size": size, "background": style,
        "fine_print_place": "lower half" if variant == "train" else "top right",
        "text": [fine], "fine_print_box": box, "page_text": [heading, *body],
    }  # fmt: skip
    return Draft(question, [image], answer, reference, meta)
