"""A user's verifier: a plain function ``(task, answer) -> float`` that scores an episode's answer.

Shared by the agent (``Agent(verifier=...)``, ``agent.run(..., verifier=...)``: the score is recorded
as the episode's feedback) and by task files (``"verifier": "package.module:function"``). ``task`` is
what the episode was given: the task text for ``Agent.run``, the task object in an evaluation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from regrpo.errors import InputError
from regrpo.importing import import_named

__all__ = [
    "Verifier",
    "VerifierError",
    "feedback_source",
    "import_verifier",
    "score_answer",
    "verifier_from_source",
    "verifier_name",
]

_SOURCE_PREFIX = "verifier:"

Verifier = Callable[[Any, str | None], float]
"""``(task, answer) -> score``: 1.0 right, 0.0 wrong, anything between for partly right."""


class VerifierError(InputError):
    """A verifier raised, or returned something other than a number from 0 to 1."""


def verifier_name(verifier: Verifier) -> str:
    """``module:qualified_name`` of a verifier function (what feedback records as its source)."""
    module = getattr(verifier, "__module__", None) or "?"
    return f"{module}:{getattr(verifier, '__qualname__', type(verifier).__name__)}"


def import_verifier(name: str, error: type[InputError] = InputError) -> Verifier:
    """The function ``"package.module:function"`` names, or ``error`` saying why not (task files,
    ``--verifier``, and the trainer calling the verifier a traffic episode recorded)."""
    function = import_named(name, "verifier", error)
    if not callable(function):
        raise error(f"verifier {name!r} is a {type(function).__name__}, not a function")
    return function  # type: ignore[no-any-return]


def feedback_source(verifier: Verifier) -> str:
    """The ``source`` of the feedback a verifier's score is recorded as: ``verifier:module:name``."""
    return f"{_SOURCE_PREFIX}{verifier_name(verifier)}"


def verifier_from_source(source: str | None) -> str | None:
    """The verifier's ``module:name`` that a feedback ``source`` names; ``None`` for a caller's feedback."""
    if source is None or not source.startswith(_SOURCE_PREFIX):
        return None
    return source[len(_SOURCE_PREFIX) :]


def score_answer(verifier: Verifier, task: Any, answer: str | None, *, name: str | None = None) -> float:
    """``verifier(task, answer)`` as a float in ``[0, 1]``, or a :class:`VerifierError` naming it.

    A broken verifier must not look like a wrong answer, so neither an exception nor an out-of-range
    or non-numeric score is turned into 0.
    """
    label = name or verifier_name(verifier)
    try:
        value = verifier(task, answer)
    except Exception as exc:
        raise VerifierError(f"verifier {label} raised {type(exc).__name__}: {exc}") from exc
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise VerifierError(f"verifier {label} returned {value!r}; it must return a number from 0 to 1")
    return float(value)
