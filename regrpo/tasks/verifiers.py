"""Answer verifiers: is a model's free-text answer the task's reference answer?

Pure functions, one per answer kind, used by :meth:`regrpo.tasks.schema.Task.check` and by the
reference runner's ``expects`` checks:

* numbers — :func:`parse_numbers` pulls numbers out of text like ``"$1,042.50"`` or ``"42.5 USD"``;
  :func:`number_matches` compares the **last** number in the answer (models write their working
  first and the result last: "17 + 25 = 42") with the reference, within an absolute tolerance plus
  a relative 1e-6 for float formatting. Taking one number, not "any number", keeps an answer that
  lists many candidates from scoring.
* text — :func:`normalize_text` folds case, Unicode forms, punctuation, articles and whitespace;
  :func:`text_matches` accepts the reference as a whole-word phrase inside the answer, the way GTA's
  ``\\b(alias)\\b`` regex does ("The code is KX 4821." matches "KX-4821").
* sets — :func:`set_matches` splits the answer on commas, semicolons, newlines and "and", and
  compares the normalised items as sets (order-free, duplicates ignored).
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable

__all__ = [
    "contains_normalized",
    "normalize_text",
    "number_matches",
    "parse_numbers",
    "set_matches",
    "squash",
    "text_matches",
]

RELATIVE_SLACK = 1e-6
"""Relative slack added to every numeric tolerance, for float formatting (0.1 + 0.2)."""

# An optional sign, digits with optional thousands separators (1,234,567), an optional fraction.
_NUMBER = re.compile(r"(?<![\w.])([-−]?)(\d{1,3}(?:,\d{3})+|\d+)?(\.\d+)?(?![\d])")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_SPLIT_ITEMS = re.compile(r"[,;\n]|\band\b|&")


def parse_numbers(text: str) -> list[float]:
    """Every number in ``text``, in order: ``"$1,042.50 and -3"`` gives ``[1042.5, -3.0]``.

    Thousands separators must be well-formed (``1,234``); ``"1,2"`` reads as two numbers.
    """
    numbers = []
    for match in _NUMBER.finditer(text):
        sign, whole, fraction = match.groups()
        if whole is None and fraction is None:
            continue
        digits = (whole or "0").replace(",", "") + (fraction or "")
        value = float(digits)
        numbers.append(-value if sign else value)
    return numbers


def number_matches(answer: str, value: float, tolerance: float = 0.0) -> bool:
    """Whether the last number in ``answer`` is within ``tolerance`` (absolute) of ``value``."""
    numbers = parse_numbers(answer)
    if not numbers or not math.isfinite(value):
        return False
    return abs(numbers[-1] - value) <= tolerance + RELATIVE_SLACK * max(1.0, abs(value))


def normalize_text(text: str) -> str:
    """Lower case, NFKC, punctuation to spaces, articles dropped, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(" " if unicodedata.category(ch).startswith(("P", "S")) else ch for ch in text)
    return " ".join(_ARTICLES.sub(" ", text).split())


def text_matches(answer: str, value: str) -> bool:
    """Whether normalised ``value`` occurs in normalised ``answer`` as whole words."""
    want = normalize_text(value)
    if not want:
        return False
    return f" {want} " in f" {normalize_text(answer)} "


def set_matches(answer: str, values: Iterable[str]) -> bool:
    """Whether the items listed in ``answer`` are exactly ``values`` (order-free, normalised)."""
    want = {normalize_text(v) for v in values} - {""}
    got = {normalize_text(item) for item in _SPLIT_ITEMS.split(answer)} - {""}
    return bool(want) and got == want


def squash(text: str) -> str:
    """Lower case with whitespace and thousands commas removed: how ``expects`` strings are compared.

    Spacing is the one thing OCR gets wrong that never changes meaning (``"48+17"`` vs ``"48 + 17"``);
    punctuation is kept, because a decimal point does.
    """
    return re.sub(r"(?<=\d),(?=\d{3})|\s+", "", unicodedata.normalize("NFKC", text).lower())


def contains_normalized(haystack: str, needle: str) -> bool:
    """Whether ``needle`` occurs in ``haystack`` after :func:`squash` on both.

    A needle that starts or ends with a digit must not continue a longer number there: ``"12"`` is
    not found in ``"312"`` or ``"12.5"``, so a count of 1 is not confirmed by an output of 12.
    """
    # Squashed, "48 + 17" finds "48+17"; spaced, "168" is not glued to the next line's "9".
    pairs = ((squash(needle), squash(haystack)), (_spaced(needle), _spaced(haystack)))
    return any(want and _found(want, text) for want, text in pairs)


def _spaced(text: str) -> str:
    return " ".join(re.sub(r"(?<=\d),(?=\d{3})", "", unicodedata.normalize("NFKC", text).lower()).split())


def _found(want: str, text: str) -> bool:
    before = r"(?<![\d.])" if want[0].isdigit() else ""
    after = r"(?!\.?\d)" if want[-1].isdigit() else ""
    return re.search(before + re.escape(want) + after, text) is not None
