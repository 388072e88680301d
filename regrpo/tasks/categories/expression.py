"""``expression``: an arithmetic expression drawn in the image, to read and evaluate (ocr + calculator).

The image uses printed operators (``x`` for times, ``÷`` is avoided because OCR alphabets lack it),
so the agent must also translate what it reads into calculator syntax (``x`` → ``*``). Difficulty adds
operands, parentheses, smaller type and noise. The OCR step's ``expects`` are every number in the
expression, so the answer is derived from what was read.
"""

from __future__ import annotations

import numpy as np

from regrpo.tasks import render
from regrpo.tasks.draft import Draft, calculated, choice
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
_QUESTIONS = (
    "What is the value of the expression in the image?",
    "Evaluate the arithmetic written on this card.",
    "Solve the calculation shown in the picture.",
    "What number does the expression in the image come to?",
)


def generate(rng: np.random.Generator, difficulty: int) -> Draft:
    """A printed expression of 2-3 operands; the answer is its value."""
    printed, calc = choice(rng, _FORMS[difficulty])
    a, b, c = (int(rng.integers(12, 99)) for _ in range(3))
    if difficulty == 3 and "-" in calc and a <= b:  # keep (a - b) positive for readability
        a, b = b + 1, a
    operands = {"a": a, "b": b, "c": c}
    shown, expression = printed.format(**operands), calc.format(**operands)
    text = shown + choice(rng, (" = ?", " =", ""))
    size = int(rng.integers(34, 46)) - 4 * (difficulty - 1)
    font_name, style = choice(rng, render.FONTS), choice(rng, render.BACKGROUNDS)
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
    meta = {"template": printed, "font": font_name, "size": size, "background": style, "text": [text]}
    return Draft(choice(rng, _QUESTIONS), [image], AnswerSpec("number", value), reference, meta)
