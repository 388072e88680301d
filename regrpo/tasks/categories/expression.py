"""``expression``: an arithmetic expression drawn in the image, to read and evaluate (ocr + calculator).

The image uses printed operators (``x`` for times, ``÷`` is avoided because OCR alphabets lack it),
so the agent must also translate what it reads into calculator syntax (``x`` → ``*``). Difficulty adds
operands, parentheses, smaller type and noise. The OCR step's ``expects`` are every number in the
expression, so the answer is derived from what was read.

Held-out tasks (``variant="holdout"``) use operands of three digits (100-999, training: 12-98), the
STIX faces and question phrasings no training task uses.
"""

from __future__ import annotations

import numpy as np

from regrpo.tasks import render
from regrpo.tasks.draft import Draft, Variant, calculated, choice
from regrpo.tasks.schema import AnswerSpec, ReferenceStep

__all__ = ["generate"]

# (printed form, calculator form) over operands a, b, c.
_FORMS: dict[int, tuple[tuple[str, str], ...]] = {
    1: (("{a} + {b}", "{a} + {b}"), ("{a} x {b}", "{a} * {b}"), ("{a} - {b}", "{a} - {b}")),
    2: (("{a} + {b} x {c}", "{a} + {b} * {c}"), ("{a} x {b} - {c}", "{a} * {b} - {c}"),
        ("{a} + {b} + {c}", "{a} + {b} + {c}")),
    3: (("({a} + {b}) x {c}", "({a} + {b}) * {c}"), ("{a} x ({b} - {c})", "{a} * ({b} - {c})"),
        ("({a} - {b}) x {c}", "({a} - {b}) * {c}")),
}  # fmt: skip
_QUESTIONS: dict[Variant, tuple[str, ...]] = {
    "train": (
        "What is the value of the expression in the image?",
        "Evaluate the arithmetic written on this card.",
        "Solve the calculation shown in the picture.",
        "What number does the expression in the image come to?",
    ),
    "holdout": (
        "Work out the arithmetic printed here.",
        "A card shows a calculation. What is its result?",
        "Compute what the written arithmetic equals.",
    ),
}
_OPERANDS: dict[Variant, tuple[int, int]] = {"train": (12, 99), "holdout": (100, 1000)}
"""Operand range ``[low, high)`` per variant: held-out numbers are never seen in training."""


def generate(rng: np.random.Generator, difficulty: int, variant: Variant = "train") -> Draft:
    """A printed expression of 2-3 operands; the answer is its value."""
    printed, calc = choice(rng, _FORMS[difficulty])
    a, b, c = (int(rng.integers(*_OPERANDS[variant])) for _ in range(3))
    if difficulty == 3 and "-" in calc and a <= b:  # keep (a - b) positive for readability
        a, b = b + 1, a
    operands = {"a": a, "b": b, "c": c}
    shown, expression = printed.format(**operands), calc.format(**operands)
    text = shown + choice(rng, (" = ?", " =", ""))
    size = int(rng.integers(34, 46)) - 4 * (difficulty - 1)
    font_name, style = choice(rng, render.TEXT_FONTS[variant]), choice(rng, render.BACKGROUNDS)
    width = render.text_width(text, font_name, size) + int(rng.integers(60, 200))
    height = int(size * 2.2) + int(rng.integers(40, 120))
    canvas = render.background(rng, width, height, style)
    origin = (int(rng.integers(20, width - render.text_width(text, font_name, size) - 19)),
              int(rng.integers(15, height - int(size * 1.4))))  # fmt: skip
    block = render.render_block(
        canvas, [text], font_name=font_name, size=size, colour=render.ink_colour(rng), origin=origin
    )
    image = render.add_noise(block.image, rng, sigma=(0.0, 5.0, 10.0)[difficulty - 1])
    value, result = calculated(expression)
    used = [str(operands[k]) for k in "abc" if "{" + k + "}" in printed]
    reference = [
        ReferenceStep("ocr", {"image": "img_0"}, used),
        ReferenceStep("calculator", {"expression": expression}, [result]),
    ]
    phrasing = choice(rng, _QUESTIONS[variant])
    meta = {
        "template": printed, "phrasing": phrasing, "font": font_name, "size": size, "background": style,
        "operand_range": list(_OPERANDS[variant]), "text": [text],
    }  # fmt: skip
    return Draft(phrasing, [image], AnswerSpec("number", value), reference, meta)
