"""``lookup``: read a name in the image, look a fact up about it, compute (ocr + search + calculator).

The names are fictional entities from :mod:`regrpo.tasks.facts` (the committed search corpus), so
a model cannot know the fact and must search. The image is a town sign, an order slip, a ferry
ticket or a trail sign; some also carry a number the computation needs (a quantity, a trailhead
altitude). The OCR step expects the name and any such number; the search step expects the fact's
value; the calculator expression uses exactly those values.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from regrpo.tasks import render
from regrpo.tasks.draft import Draft, calculated, choice, money
from regrpo.tasks.facts import Fact, load_facts
from regrpo.tasks.schema import AnswerSpec, ReferenceStep

__all__ = ["generate"]


def _card(rng: np.random.Generator, difficulty: int, lines: list[str]) -> tuple[np.ndarray, dict[str, Any]]:
    size = int(rng.integers(32, 42)) - 3 * (difficulty - 1)
    font_name, style = choice(rng, render.FONTS), choice(rng, render.BACKGROUNDS)
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


def _town(rng: np.random.Generator, fact: Fact) -> tuple[list[str], str, str, list[str], str, str]:
    name, a = str(fact.attributes["name"]), fact.attributes
    lines = [choice(rng, ("WELCOME TO", "YOU ARE ENTERING", "TOWN OF")), name.upper()]
    if rng.random() < 0.5:
        year = int(rng.integers(2025, 2036))
        question = choice(
            rng,
            (f"How many years old will the town on this sign be in {year}?",
             f"In {year}, how many years will have passed since the town on the sign was founded?"),
        )  # fmt: skip
        return lines, question, f"{name} founded", [str(a["founded"])], f"{year} - {a['founded']}", "age"
    question = choice(
        rng,
        ("How many thousand people live in the town on this sign? Give the number of thousands.",
         "What is the population of the town on the sign, in thousands?"),
    )  # fmt: skip
    return (
        lines,
        question,
        f"{name} population",
        [str(a["population"])],
        f"{a['population']} / 1000",
        "population",
    )


def _product(rng: np.random.Generator, fact: Fact) -> tuple[list[str], str, str, list[str], str, str]:
    a, qty = fact.attributes, int(rng.integers(2, 7))
    lines = ["ORDER SLIP", f"{qty} x {a['product']}"]
    question = choice(
        rng,
        ("At list price, how much do the items on this order slip cost in total?",
         "What is the total list price of the order on this slip, in dollars?"),
    )  # fmt: skip
    expression = f"round({qty} * {money(float(a['price']))}, 2)"
    return lines, question, f"{a['product']} price", [money(float(a["price"]))], expression, "order"


def _ship(rng: np.random.Generator, fact: Fact) -> tuple[list[str], str, str, list[str], str, str]:
    name, a = str(fact.attributes["name"]), fact.attributes
    lines = [
        choice(rng, ("BOARDING PASS", "FERRY TICKET")),
        f"Vessel: {name}",
        f"Deck {int(rng.integers(2, 9))}",
    ]
    if rng.random() < 0.5:
        year = int(rng.integers(2025, 2036))
        question = f"How many years old will the ship named on this ticket be in {year}?"
        return (
            lines,
            question,
            f"{name} ship launched",
            [str(a["launched"])],
            f"{year} - {a['launched']}",
            "age",
        )
    question = (
        "How many metres long is the ship on this ticket, per member of its crew? Round to two decimals."
    )
    expression = f"round({a['length_m']} / {a['crew']}, 2)"
    return (
        lines,
        question,
        f"{name} ship length crew",
        [str(a["length_m"]), str(a["crew"])],
        expression,
        "ratio",
    )


def _mountain(rng: np.random.Generator, fact: Fact) -> tuple[list[str], str, str, list[str], str, str]:
    name, a = str(fact.attributes["name"]), fact.attributes
    base = int(rng.integers(300, int(a["height_m"]) - 400))
    lines = [f"Mount {name}", f"Trailhead {base} m"]
    question = choice(
        rng,
        ("How many metres does a hiker climb from this trailhead to the summit?",
         "What is the height difference between this trailhead and the summit of the mountain?"),
    )  # fmt: skip
    return lines, question, f"Mount {name} height", [str(a["height_m"])], f"{a['height_m']} - {base}", "climb"


_MAKERS = {"town": _town, "product": _product, "ship": _ship, "mountain": _mountain}


def generate(rng: np.random.Generator, difficulty: int) -> Draft:
    """A sign, slip or ticket naming a fictional entity; the answer needs a searched fact."""
    facts = [
        f for f in load_facts() if f.attributes["kind"] in _MAKERS and "distractor_of" not in f.attributes
    ]
    fact = choice(rng, facts)
    kind = str(fact.attributes["kind"])
    lines, question, query, found, expression, template = _MAKERS[kind](rng, fact)
    image, meta = _card(rng, difficulty, lines)
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
    meta |= {"template": f"{kind}/{template}", "entity": fact.id}
    return Draft(question, [image], AnswerSpec("number", value, tolerance=0.005), reference, meta)
