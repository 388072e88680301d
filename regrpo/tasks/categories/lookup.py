"""``lookup``: read a name in the image, look a fact up about it, compute (ocr + search + calculator).

The names are fictional entities from :mod:`regrpo.tasks.facts` (the committed search corpus), so
a model cannot know the fact and must search. The image is a town sign, an order slip, a ferry
ticket or a trail sign; some also carry a number the computation needs (a quantity, a trailhead
altitude). The OCR step expects the name and any such number; the search step expects the fact's
value; the calculator expression uses exactly those values.

Held-out tasks (``variant="holdout"``) are set in the STIX faces and asked with question phrasings
no training task uses (two or more per kind of question).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from regrpo.tasks import render
from regrpo.tasks.draft import Draft, Variant, calculated, choice, money
from regrpo.tasks.facts import Fact, load_facts
from regrpo.tasks.schema import AnswerSpec, ReferenceStep

__all__ = ["generate"]


_QUESTIONS: dict[Variant, dict[str, tuple[str, ...]]] = {
    "train": {
        "town/age": (
            "How many years old will the town on this sign be in {year}?",
            "In {year}, how many years will have passed since the town on the sign was founded?",
        ),
        "town/population": (
            "How many thousand people live in the town on this sign? Give the number of thousands.",
            "What is the population of the town on the sign, in thousands?",
        ),
        "product/order": (
            "At list price, how much do the items on this order slip cost in total?",
            "What is the total list price of the order on this slip, in dollars?",
        ),
        "ship/age": ("How many years old will the ship named on this ticket be in {year}?",),
        "ship/ratio": (
            "How many metres long is the ship on this ticket, per member of its crew? Round to two decimals.",
        ),
        "mountain/climb": (
            "How many metres does a hiker climb from this trailhead to the summit?",
            "What is the height difference between this trailhead and the summit of the mountain?",
        ),
    },
    "holdout": {
        "town/age": (
            "By {year}, what age will the settlement named on this sign have reached?",
            "Count the years from the founding of this town to {year}.",
        ),
        "town/population": (
            "Look up the number of residents of the place on the sign and give it in thousands.",
            "In thousands of inhabitants, how big is the town this sign names?",
        ),
        "product/order": (
            "Using the catalogue price, what is this order worth?",
            "Price the slip: quantity times the product's list price, in dollars.",
        ),
        "ship/age": (
            "The vessel on this pass was launched some years ago. How old will it be in {year}?",
            "Counting from its launch, what age does the ticket's ship reach in {year}?",
        ),
        "ship/ratio": (
            "Divide the length in metres of the ticket's vessel by its crew size (two decimals).",
            "Metres of hull per crew member for the ship on this ticket? Two decimals, please.",
        ),
        "mountain/climb": (
            "Starting at the trailhead on this sign, how much elevation is gained to the top?",
            "From the trailhead altitude shown, how many metres up is the peak?",
        ),
    },
}
"""Question phrasings per variant, keyed by ``<kind>/<template>``; ``{year}`` is filled in."""


def _card(
    rng: np.random.Generator, difficulty: int, variant: Variant, lines: list[str]
) -> tuple[np.ndarray, dict[str, Any]]:
    size = int(rng.integers(32, 42)) - 3 * (difficulty - 1)
    font_name, style = choice(rng, render.TEXT_FONTS[variant]), choice(rng, render.BACKGROUNDS)
    width = max(render.text_width(line, font_name, size) for line in lines) + int(rng.integers(60, 160))
    height = int(size * 1.7 * len(lines)) + int(rng.integers(40, 100))
    block = render.text_card(
        rng,
        lines,
        width=width,
        height=height,
        style=style,
        font_name=font_name,
        size=size,
        origin=(30, 25),
        spacing=1.7,
    )
    image = render.add_noise(block.image, rng, sigma=(0.0, 4.0, 8.0)[difficulty - 1])
    return image, {"font": font_name, "size": size, "background": style, "text": lines}


_Made = tuple[list[str], str, str, list[str], str, dict[str, int]]
"""What a maker returns: image lines, template, search query, searched values, expression, question fields."""


def _town(rng: np.random.Generator, fact: Fact) -> _Made:
    name, a = str(fact.attributes["name"]), fact.attributes
    lines = [choice(rng, ("WELCOME TO", "YOU ARE ENTERING", "TOWN OF")), name.upper()]
    if rng.random() < 0.5:
        year = int(rng.integers(2025, 2036))
        return (
            lines,
            "age",
            f"{name} founded",
            [str(a["founded"])],
            f"{year} - {a['founded']}",
            {"year": year},
        )
    population = str(a["population"])
    return lines, "population", f"{name} population", [population], f"{population} / 1000", {}


def _product(rng: np.random.Generator, fact: Fact) -> _Made:
    a, qty = fact.attributes, int(rng.integers(2, 7))
    lines = ["ORDER SLIP", f"{qty} x {a['product']}"]
    expression = f"round({qty} * {money(float(a['price']))}, 2)"
    return lines, "order", f"{a['product']} price", [money(float(a["price"]))], expression, {}


def _ship(rng: np.random.Generator, fact: Fact) -> _Made:
    name, a = str(fact.attributes["name"]), fact.attributes
    lines = [
        choice(rng, ("BOARDING PASS", "FERRY TICKET")),
        f"Vessel: {name}",
        f"Deck {int(rng.integers(2, 9))}",
    ]
    if rng.random() < 0.5:
        year = int(rng.integers(2025, 2036))
        found = [str(a["launched"])]
        return lines, "age", f"{name} ship launched", found, f"{year} - {a['launched']}", {"year": year}
    expression = f"round({a['length_m']} / {a['crew']}, 2)"
    found = [str(a["length_m"]), str(a["crew"])]
    return lines, "ratio", f"{name} ship length crew", found, expression, {}


def _mountain(rng: np.random.Generator, fact: Fact) -> _Made:
    name, a = str(fact.attributes["name"]), fact.attributes
    base = int(rng.integers(300, int(a["height_m"]) - 400))
    lines = [f"Mount {name}", f"Trailhead {base} m"]
    return lines, "climb", f"Mount {name} height", [str(a["height_m"])], f"{a['height_m']} - {base}", {}


_MAKERS = {"town": _town, "product": _product, "ship": _ship, "mountain": _mountain}


def generate(rng: np.random.Generator, difficulty: int, variant: Variant = "train") -> Draft:
    """A sign, slip or ticket naming a fictional entity; the answer needs a searched fact."""
    facts = [
        f for f in load_facts() if f.attributes["kind"] in _MAKERS and "distractor_of" not in f.attributes
    ]
    fact = choice(rng, facts)
    kind = str(fact.attributes["kind"])
    lines, template, query, found, expression, fields = _MAKERS[kind](rng, fact)
    phrasing = choice(rng, _QUESTIONS[variant][f"{kind}/{template}"])
    question = phrasing.format(**fields)
    image, meta = _card(rng, difficulty, variant, lines)
    value, shown = calculated(expression)
    read = [str(fact.attributes["name"])] + [
        token for token in expression.replace("(", " ").replace(",", " ").split() if token.isdigit()
    ]
    read = [token for token in read if token not in found]  # numbers from the image, not the corpus
    read = [token for token in read if any(token.lower() in line.lower() for line in lines)]
    reference = [
        ReferenceStep("ocr", {"image": "img_0"}, read),
        ReferenceStep("search", {"query": query, "k": 3}, found),
        ReferenceStep("calculator", {"expression": expression}, [shown]),
    ]
    meta |= {"template": f"{kind}/{template}", "phrasing": phrasing, "entity": fact.id}
    return Draft(question, [image], AnswerSpec("number", value, tolerance=0.005), reference, meta)
