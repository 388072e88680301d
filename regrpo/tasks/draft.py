"""``Draft``: what a category generator returns before the suite writer gives it an id and files.

A generator is a pure function ``(rng, difficulty, variant) -> Draft``; it draws every random choice
from ``rng`` so the same seed gives the same question, pixels and reference. ``variant`` says which
side of the train / held-out split the task is for: a ``"holdout"`` task is drawn from question
phrasings, fonts and a layout or value range that no ``"train"`` task uses (``docs/task_suite.md``,
"Held-out variants"), so held-out success measures the skill rather than memorised templates. The suite writer
(:mod:`regrpo.tasks.suite`) saves the images as PNG files and turns the draft into a
:class:`~regrpo.tasks.schema.Task`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from regrpo.tasks.schema import VARIANTS, AnswerSpec, ReferenceStep, Variant
from regrpo.tools.calculator import evaluate

__all__ = ["VARIANTS", "Draft", "Generator", "Variant", "calculated", "choice", "money"]

T = TypeVar("T")


@dataclass(frozen=True)
class Draft:
    """A generated task without its id and file paths."""

    question: str
    images: list[np.ndarray]
    answer: AnswerSpec
    reference: list[ReferenceStep]
    meta: dict[str, Any] = field(default_factory=dict)


Generator = Callable[[np.random.Generator, int, Variant], Draft]
"""A category's generator: ``(rng, difficulty 1-3, variant) -> Draft``."""


def choice(rng: np.random.Generator, options: Sequence[T]) -> T:
    """One element of ``options``, drawn from ``rng`` (numpy's ``choice`` mangles tuples and strings)."""
    return options[int(rng.integers(len(options)))]


def money(value: float) -> str:
    """``12.5`` as ``"12.50"``: prices are printed with two decimals."""
    return f"{value:.2f}"


def calculated(expression: str) -> tuple[float, str]:
    """The value of ``expression`` as the calculator tool computes it, and that value as text.

    References compute their answers with the very evaluator the ``calculator`` tool runs, so the
    expected output of a reference's last step is exactly what the tool prints.
    """
    value = evaluate(expression)
    return float(value), str(value)
