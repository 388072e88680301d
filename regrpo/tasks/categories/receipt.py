"""``receipt``: read prices off a receipt or a price tag, then compute (ocr + calculator).

The receipt never prints the number asked for (no total line when the question is the total), so
the answer needs the read prices *and* arithmetic. Difficulty adds items, shrinks the type and
adds noise. Prices carry no "$": easyocr reads a "$" glued to digits as "5" or "8" ("$4.15" ->
"54.15"), which would fail the reference for the OCR's sake, not the agent's. Every calculator
expression is wrapped in ``round(..., 2)`` so the tool prints cents exactly (``15.99``, not
``15.989999999999998``), which the reference's ``expects`` can name.

Held-out tasks (``variant="holdout"``) print prices of 30.00-89.99 (training: 1.20-29.99) in the
STIX faces, pay with larger notes, and ask with question phrasings no training task uses.
"""

from __future__ import annotations

import numpy as np

from regrpo.tasks import render
from regrpo.tasks.draft import Draft, Variant, calculated, choice, money
from regrpo.tasks.schema import AnswerSpec, ReferenceStep

__all__ = ["generate"]

_ITEMS = (
    "Coffee", "Bagel", "Orange juice", "Sandwich", "Green tea", "Muffin", "Soup", "Salad", "Croissant",
    "Pasta", "Lemonade", "Cookies", "Yogurt", "Apples", "Bread", "Cheese", "Noodles", "Rice bowl",
)  # fmt: skip
_FONTS: dict[Variant, tuple[str, ...]] = {
    "train": tuple(f for f in render.FONTS if "Mono" not in f),
    "holdout": render.HOLDOUT_FONTS,
}
"""Monospaced faces leave a wide gap around "." that OCR reads as a break ("4.15" -> "4", "15")."""
_CENTS: dict[Variant, tuple[int, int]] = {"train": (120, 3000), "holdout": (3000, 9000)}
"""Price range ``[low, high)`` in cents per variant."""
_NOTES: dict[Variant, tuple[int, ...]] = {"train": (50, 100, 200), "holdout": (100, 200, 500)}
"""Notes a "change" question pays with: the smallest one above the bill."""
_UNITS = ("USD", "EUR", "dollars")
_STORES = ("CORNER CAFE", "MARKET HALL", "THE DAILY GRIND", "FRESH FOODS", "BLUE DOOR DELI", "CITY BAKERY")
_TOTAL_QUESTIONS: dict[Variant, tuple[str, ...]] = {
    "train": (
        "What is the total cost of all the items on this receipt?",
        "Add up every item on the receipt. How much is the bill?",
        "How much did this shopping trip cost in total?",
        "The receipt's total line is missing. What should the total be?",
    ),
    "holdout": (
        "What do the purchases listed here come to altogether?",
        "Sum the prices on this till slip.",
    ),
}
_CHANGE_QUESTIONS: dict[Variant, tuple[str, ...]] = {
    "train": (
        "I paid with a {paid} dollar note. How much change should I get back?",
        "If the customer handed over {paid} dollars, what change is due?",
    ),
    "holdout": (
        "Paying {paid} dollars for everything listed, how much money comes back?",
        "A {paid} dollar bill covers this purchase. What is left over?",
    ),
}
_PAIR_QUESTIONS: dict[Variant, tuple[str, ...]] = {
    "train": (
        "How much do the {a} and the {b} cost together?",
        "What is the combined price of the {a} and the {b} on this receipt?",
    ),
    "holdout": (
        "Buying only the {a} and the {b}, what would I spend?",
        "Add the {a} to the {b}: what is the price of the two?",
    ),
}
_TAG_QUESTIONS: dict[Variant, tuple[str, ...]] = {
    "train": (
        "The tag shows a price and a discount. What is the price after the discount?",
        "How much does this item cost once the discount on the tag is applied?",
    ),
    "holdout": (
        "What will I pay for this item with the reduction shown?",
        "Apply the markdown on this label. What is the new price?",
    ),
}


def _prices(rng: np.random.Generator, n: int, variant: Variant) -> list[float]:
    prices: list[float] = []
    while len(prices) < n:
        cents = int(rng.integers(*_CENTS[variant]))
        if cents % 100 and cents / 100 not in prices:  # no whole dollars: their ".00" is easy to drop
            prices.append(cents / 100)
    return prices


def _receipt(rng: np.random.Generator, difficulty: int, variant: Variant) -> Draft:
    n_items = int(rng.integers(2, 4)) + difficulty - 1
    names = [str(x) for x in rng.choice(_ITEMS, size=n_items, replace=False)]
    prices = _prices(rng, n_items, variant)
    size = int(rng.integers(28, 33)) - 2 * (difficulty - 1)
    font_name, style = choice(rng, _FONTS[variant]), choice(rng, render.BACKGROUNDS)
    line_h = int(size * 1.6)
    width, height = int(size * 19), int(line_h * (n_items + 4) + 40)
    canvas = render.background(rng, width, height, style)
    colour = render.ink_colour(rng)
    header = [choice(rng, _STORES), ""]
    item_lines = [f"{name}" for name in names]
    block = render.render_block(
        canvas,
        header + item_lines,
        font_name=font_name,
        size=size,
        colour=colour,
        origin=(24, 20),
        spacing=1.6,
    )
    price_text = [money(p) for p in prices]
    ends = {len(header) + i: width - 24 for i in range(n_items)}
    block = render.render_block(
        block.image, ["", ""] + price_text, font_name=font_name, size=size, colour=colour,
        origin=(24, 20), spacing=1.6, align_right=ends,
    )  # fmt: skip
    image = render.add_noise(block.image, rng, sigma=(0.0, 3.0, 6.0)[difficulty - 1])

    template = choice(rng, ("total", "change", "pair"))
    if template == "pair":
        i, j = (int(k) for k in rng.choice(n_items, size=2, replace=False))
        phrasing = choice(rng, _PAIR_QUESTIONS[variant])
        used, question = [prices[i], prices[j]], phrasing.format(a=names[i], b=names[j])
        expression = f"round({money(prices[i])} + {money(prices[j])}, 2)"
    elif template == "change":
        paid = next(note for note in _NOTES[variant] if note > sum(prices))  # never negative change
        phrasing = choice(rng, _CHANGE_QUESTIONS[variant])
        used, question = prices, phrasing.format(paid=paid)
        expression = f"round({paid} - ({' + '.join(money(p) for p in prices)}), 2)"
    else:
        phrasing = choice(rng, _TOTAL_QUESTIONS[variant])
        used, question = prices, phrasing
        expression = f"round({' + '.join(money(p) for p in prices)}, 2)"
    value, shown = calculated(expression)
    reference = [
        ReferenceStep("ocr", {"image": "img_0"}, [money(p) for p in used]),
        ReferenceStep("calculator", {"expression": expression}, [shown]),
    ]
    lines = [header[0], *(f"{n} {p}" for n, p in zip(names, price_text, strict=True))]
    meta = {
        "template": template, "phrasing": phrasing, "font": font_name, "size": size, "background": style,
        "price_range": list(_CENTS[variant]), "text": lines,
    }  # fmt: skip
    return Draft(question, [image], AnswerSpec("number", value, tolerance=0.005), reference, meta)


def _price_tag(rng: np.random.Generator, difficulty: int, variant: Variant) -> Draft:
    price = _prices(rng, 1, variant)[0]  # in the variant's range, as receipt items are
    discount = int(choice(rng, (10, 15, 20, 25, 30, 40, 50)))
    size = int(rng.integers(30, 40)) - 3 * (difficulty - 1)
    font_name, style = choice(rng, _FONTS[variant]), choice(rng, render.BACKGROUNDS)
    lines = [
        choice(rng, ("PRICE", "OUR PRICE", "NOW")),
        f"{money(price)} {choice(rng, _UNITS)}",
        f"{discount}% OFF",
    ]
    width, height = int(size * 9), int(size * 1.7 * 3 + 50)
    block = render.text_card(
        rng,
        lines,
        width=width,
        height=height,
        style=style,
        font_name=font_name,
        size=size,
        origin=(24, 24),
        spacing=1.7,
    )
    image = render.add_noise(block.image, rng, sigma=(0.0, 3.0, 6.0)[difficulty - 1])
    expression = f"round({money(price)} * (1 - {discount} / 100), 2)"
    value, shown = calculated(expression)
    reference = [
        ReferenceStep("ocr", {"image": "img_0"}, [money(price), f"{discount}%"]),
        ReferenceStep("calculator", {"expression": expression}, [shown]),
    ]
    question = choice(rng, _TAG_QUESTIONS[variant])
    meta = {
        "template": "tag", "phrasing": question, "font": font_name, "size": size, "background": style,
        "price_range": list(_CENTS[variant]), "text": lines,
    }  # fmt: skip
    return Draft(question, [image], AnswerSpec("number", value, tolerance=0.005), reference, meta)


def generate(rng: np.random.Generator, difficulty: int, variant: Variant = "train") -> Draft:
    """A receipt question (total, change, a pair of items) or, one time in four, a discounted price tag."""
    make = _price_tag if rng.random() < 0.25 else _receipt
    return make(rng, difficulty, variant)
