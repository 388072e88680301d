"""Fictional facts for the ``lookup`` tasks, and the offline search corpus built from them.

A lookup task shows a name in an image (a town sign, an order slip, a ferry ticket, a trail sign)
and asks for a number that needs a fact about that name, so the agent must read (ocr), look up
(search) and compute (calculator). The entities are invented (pronounceable names built from
syllables) so a model cannot answer from memory, and generated from one fixed seed so the corpus
committed at ``regrpo/data/search_corpus.jsonl`` is reproducible::

    python -m regrpo.tasks.facts --out regrpo/data/search_corpus.jsonl

Decisions:

* Numbers are written without thousands separators ("a population of 48213"), so the value a task's
  reference expects appears verbatim in the search result and in the calculator expression.
* Every entity has a one-word name; about a third also get a *distractor* document that shares
  the name token (``North Velmora``, a town of another size; ``Velmora Bridge``), so retrieval
  returns near misses the agent must tell apart, as real search does.
* Each line is ``{"id", "title", "text", "attributes"}``; the search tool indexes title + text only,
  ``attributes`` is for the task generators (``attributes["name"]`` and ``attributes["kind"]`` are
  always present).
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "CORPUS_PATH",
    "CORPUS_SEED",
    "ENTITY_KINDS",
    "Fact",
    "build_corpus",
    "load_facts",
    "write_corpus",
]

CORPUS_SEED = 20261124
"""The seed of the committed corpus; change it only together with the file."""
CORPUS_PATH = Path(__file__).resolve().parent.parent / "data" / "search_corpus.jsonl"
ENTITY_KINDS = ("town", "product", "ship", "mountain")
PER_KIND = 30

# Syllables chosen so OCR reads the names back: no l/I/1 or O/0 look-alikes, no ambiguous rn/m.
_ONSETS = (
    "B",
    "D",
    "F",
    "G",
    "H",
    "K",
    "M",
    "N",
    "P",
    "R",
    "S",
    "T",
    "V",
    "W",
    "Z",
    "Br",
    "Dr",
    "Kr",
    "St",
    "Tr",
)
_VOWELS = ("a", "e", "i", "u", "a", "e")
_CODAS = ("", "", "n", "r", "s", "t", "k", "v", "m")
_MIDDLES = ("ba", "de", "ka", "mi", "ne", "ra", "si", "ta", "vu", "ze", "ri", "da")
_REGIONS = ("Arvenshire", "Tessaland", "Kurvath Coast", "the Duvan Hills", "Marrow Valley", "Zentra Plains")
_PRODUCT_NOUNS = ("Kettle", "Lamp", "Blender", "Backpack", "Heater", "Speaker", "Drill", "Toaster")
_SHIP_TYPES = ("ferry", "cargo ship", "research vessel", "tall ship")
_DISTRACTOR_PREFIXES = ("North", "Upper", "New", "East")


@dataclass(frozen=True)
class Fact:
    """One corpus document: an entity (or a distractor) with its numeric attributes."""

    id: str
    title: str
    text: str
    attributes: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "text": self.text, "attributes": self.attributes}


def _name(rng: random.Random) -> str:
    syllables = [rng.choice(_ONSETS) + rng.choice(_VOWELS)]
    syllables += [rng.choice(_MIDDLES) for _ in range(rng.randint(1, 2))]
    return "".join(syllables) + rng.choice(_CODAS)


def _town(rng: random.Random, name: str) -> tuple[str, str, dict[str, Any]]:
    population, founded = rng.randint(2_000, 95_000), rng.randint(1650, 1950)
    region = rng.choice(_REGIONS)
    text = rng.choice(
        [
            "{n} is a town in {r}. It was founded in {f} and has a population of {p} people.",
            "The town of {n} lies in {r}. Founded in {f}, it is home to {p} residents today.",
            "{n}, a market town of {r}, has a population of {p}. Records date its founding to {f}.",
        ]
    ).format(n=name, r=region, f=founded, p=population)
    return f"{name} (town)", text, {"population": population, "founded": founded, "region": region}


def _product(rng: random.Random, name: str) -> tuple[str, str, dict[str, Any]]:
    noun = rng.choice(_PRODUCT_NOUNS)
    price = round(rng.randint(500, 19_999) / 100, 2)
    if price == int(price):  # keep two decimals meaningful: 12.00 reads as "12" in results
        price = price + 0.49
    weight = rng.randint(200, 6_000)
    text = rng.choice(
        [
            "The {n} {o} is a household product. Its list price is {p:.2f} dollars and it weighs {w} grams.",
            "{n} {o}: list price {p:.2f} dollars, shipping weight {w} grams.",
            "Sold under the brand {n}, the {n} {o} has a list price of {p:.2f} dollars. It weighs {w} grams.",
        ]
    ).format(n=name, o=noun, p=price, w=weight)
    attributes = {"price": price, "weight_g": weight, "product": f"{name} {noun}"}
    return f"{name} {noun} (product)", text, attributes


def _ship(rng: random.Random, name: str) -> tuple[str, str, dict[str, Any]]:
    kind = rng.choice(_SHIP_TYPES)
    length, launched, crew = rng.randint(35, 330), rng.randint(1890, 2020), rng.randint(8, 900)
    text = rng.choice(
        [
            "The {n} is a {k}, {l} metres long, launched in {y}. She sails with a crew of {c}.",
            "{n} ({k}): length {l} metres, launched in {y}, crew of {c}.",
            "Launched in {y}, the {k} {n} measures {l} metres and carries a crew of {c}.",
        ]
    ).format(n=name, k=kind, l=length, y=launched, c=crew)
    return f"{name} (ship)", text, {"length_m": length, "launched": launched, "crew": crew, "type": kind}


def _mountain(rng: random.Random, name: str) -> tuple[str, str, dict[str, Any]]:
    height, ascent = rng.randint(1_800, 6_900), rng.randint(1820, 1990)
    region = rng.choice(_REGIONS)
    text = rng.choice(
        [
            "Mount {n} is a peak in {r}, {h} metres high. It was first climbed in {a}.",
            "Mount {n} rises to {h} metres above sea level in {r}; its first ascent was in {a}.",
            "The summit of Mount {n} ({r}) stands at {h} metres. First ascent: {a}.",
        ]
    ).format(n=name, r=region, h=height, a=ascent)
    return f"Mount {name} (mountain)", text, {"height_m": height, "first_ascent": ascent, "region": region}


_MAKERS = {"town": _town, "product": _product, "ship": _ship, "mountain": _mountain}


def _distractor(rng: random.Random, kind: str, name: str, index: int) -> Fact:
    """A document that shares ``name``'s token but is about something else."""
    if kind == "town":
        other = f"{rng.choice(_DISTRACTOR_PREFIXES)} {name}"
        title, text, attributes = _town(rng, other)
        attributes |= {"kind": "town", "name": other, "distractor_of": name}
        return Fact(f"distractor-{index:03d}", title, text, attributes)
    length, built = rng.randint(40, 900), rng.randint(1800, 2015)
    text = f"The {name} Bridge is {length} metres long. It opened in {built}."
    attributes = {"kind": "bridge", "name": f"{name} Bridge", "length_m": length, "opened": built}
    attributes["distractor_of"] = name
    return Fact(f"distractor-{index:03d}", f"{name} Bridge (bridge)", text, attributes)


def build_corpus(seed: int = CORPUS_SEED) -> list[Fact]:
    """All documents, entities first (``PER_KIND`` of each kind), then distractors; same seed, same list."""
    rng = random.Random(seed)
    used: set[str] = set()
    entities: list[Fact] = []
    for kind in ENTITY_KINDS:
        for _ in range(PER_KIND):
            name = _name(rng)
            while name.lower() in used or len(name) < 5:
                name = _name(rng)
            used.add(name.lower())
            title, text, attributes = _MAKERS[kind](rng, name)
            attributes = {"kind": kind, "name": name, **attributes}
            entities.append(Fact(f"{kind}-{name.lower()}", title, text, attributes))
    distractors = [
        _distractor(rng, str(fact.attributes["kind"]), str(fact.attributes["name"]), i)
        for i, fact in enumerate(f for f in entities if rng.random() < 0.35)
    ]
    return entities + distractors


def write_corpus(path: Path, seed: int = CORPUS_SEED) -> Path:
    """Write the corpus as JSON lines (sorted keys, so the bytes depend only on ``seed``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = (json.dumps(fact.to_json(), sort_keys=True, ensure_ascii=False) for fact in build_corpus(seed))
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _read(path: Path) -> Iterator[Fact]:
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            yield Fact(record["id"], record["title"], record["text"], record["attributes"])


def load_facts(path: Path | None = None) -> list[Fact]:
    """The committed corpus (or ``path``); generators draw lookup entities from it."""
    return list(_read(path or CORPUS_PATH))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=CORPUS_PATH)
    parser.add_argument("--seed", type=int, default=CORPUS_SEED)
    args = parser.parse_args(argv)
    path = write_corpus(args.out, args.seed)
    print(f"wrote {sum(1 for _ in _read(path))} documents to {path}")


if __name__ == "__main__":
    main()
