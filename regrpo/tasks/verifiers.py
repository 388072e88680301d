"""Answer verifiers: is a model's free-text answer the task's reference answer?

Pure functions, one per answer kind, used by :meth:`regrpo.tasks.schema.Task.check` and by the
reference runner's ``expects`` checks:

* numbers — :func:`parse_numbers` pulls numbers out of text like ``"$1,042.50"`` or ``"42.5 USD"``;
  :func:`number_matches` compares the **last** number in the answer (models write their working
  first and the result last: "17 + 25 = 42") with the reference, within an absolute tolerance plus
  a relative 1e-6 for float formatting. Taking one number, not "any number", keeps an answer that
  lists many candidates from scoring.
* text — :func:`normalize_text` folds case, Unicode forms, punctuation, articles and whitespace;
  :func:`text_matches` accepts an answer that *is* the reference, bare or after a short lead-in:
  normalised, the answer must end with the reference's words, and whatever comes before them
  (the lead-in) must be at most :data:`MAX_LEAD_IN_WORDS` words, end with a linking word
  (:data:`LINKING_WORDS`: "is", "to", "reads", ...; a ``:`` or ``=`` counts as "is"), hold no
  digit and no "or"/"and"/"not"; or be one label word alone (:data:`LABEL_WORDS`: "Code UD8633",
  "Lot TH7964", "No. KX4821", the value as the image prints it). So "KX-4821", "The code is KX 4821."
  and "It goes to the HARBOR!" match, while an answer naming several candidates fails:
  "HARBOR MEADOW CANYON ..." (the reference does not end it), "MEADOW or HARBOR", "MEADOW, HARBOR"
  (no linking word) and a pasted OCR dump "PARCEL No. KX4821 To: HARBOR" (a digit in the lead-in).
  Containment, the old rule, let an answer listing all eight city names pass every destination
  task, and the reward and the evaluation both use this verifier. A trailing remark ("HARBOR is
  the destination") is refused too: the reference must end the answer. A tool's output (a
  reference run's last OCR text) is checked by containment, :func:`text_in_output`.
* sets — :func:`set_matches` splits the answer on commas, semicolons, newlines and "and", and
  compares the normalised items as sets (order-free, duplicates ignored).
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable

__all__ = [
    "LABEL_WORDS",
    "LINKING_WORDS",
    "MAX_LEAD_IN_WORDS",
    "contains_normalized",
    "normalize_text",
    "number_matches",
    "parse_numbers",
    "set_matches",
    "squash",
    "text_in_output",
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


MAX_LEAD_IN_WORDS = 6
"""Most words (after normalisation) a text answer may put before the reference ("the code is")."""
LINKING_WORDS = frozenset(
    {"is", "are", "was", "were", "be", "reads", "read", "says", "said", "shows", "to", "for", "of", "as"}
)
"""Words a lead-in must end with: it introduces the value ("... is", "... goes to", "... reads")."""
LABEL_WORDS = frozenset({"code", "lot", "ref", "no", "number", "id", "serial"})
"""Labels an image prints before a value ("Lot TH7964"); one of them alone is a lead-in too. Only
alone: "MEADOW code HARBOR" still needs a linking word, so a candidate list cannot pass through it."""
_LEAD_IN_BLOCKERS = frozenset({"or", "and", "not", "nor", "either"})
"""Words that make a lead-in name or weigh other candidates ("MEADOW or", "not MEADOW but")."""


def text_matches(answer: str, value: str) -> bool:
    """Whether ``answer`` is ``value``, bare or after a short lead-in (see the module docstring)."""
    want = normalize_text(value).split()
    if not want:
        return False
    words = normalize_text(re.sub(r"[:=]", " is ", answer)).split()
    if words[-len(want) :] != want:
        return False
    lead = words[: -len(want)]
    if not lead or (len(lead) == 1 and lead[0] in LABEL_WORDS):
        return True
    return (
        len(lead) <= MAX_LEAD_IN_WORDS
        and lead[-1] in LINKING_WORDS
        and not _LEAD_IN_BLOCKERS.intersection(lead)
        and not any(ch.isdigit() for word in lead for ch in word)
    )


def text_in_output(output: str, value: str) -> bool:
    """Whether normalised ``value`` occurs in normalised ``output`` as whole words.

    For a *tool's output* (a reference run's last OCR text holds the title and the code as well as the
    answer), never for a model's answer: containment would let an answer listing every candidate pass.
    """
    want = normalize_text(value)
    return bool(want) and f" {want} " in f" {normalize_text(output)} "


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
