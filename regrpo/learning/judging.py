"""How an answer reached at a branch point is scored: the task's answer, else the user's verifier.

A suite point and a traffic point whose feedback named the right answer carry an
:class:`~regrpo.tasks.schema.AnswerSpec`: an answer scores 1 when it matches, else 0. A traffic point
from an episode that the app's own verifier scored (``Agent(verifier=...)``, recorded as the
episode's feedback) carries that verifier instead (:class:`~regrpo.learning.records.UserVerifier`),
and the trainer calls it by its import path, exactly as the app did: ``verifier(task, answer)``, a
number from 0 to 1. A point with neither cannot score an answer (no outcome term there).

A verifier is found by import path in the trainer's process, so it must be importable there (an
app's module, not its ``__main__``); :func:`resolve` says why not, and the data engine counts such
episodes (``traffic_verifier_unresolved``) instead of making points it cannot score. A verifier that
raises on an answer is a :class:`~regrpo.verifier.VerifierError`, never a 0; a ReGRPO round drops
that continuation and counts it (``RLReport.unscored``).
"""

from __future__ import annotations

from regrpo.errors import InputError
from regrpo.learning.records import BranchPoint, UserVerifier
from regrpo.verifier import Verifier, VerifierError, import_verifier, score_answer

__all__ = ["answer_score", "judges_answers", "resolve"]


def resolve(verifier: UserVerifier) -> Verifier:
    """The function ``verifier.name`` imports to, or a :class:`VerifierError` saying why not."""
    return import_verifier(verifier.name, VerifierError)


def judges_answers(point: BranchPoint) -> bool:
    """Whether ``point`` can score an answer (it has the task's answer or the user's verifier)."""
    return point.answer is not None or point.verifier is not None


def answer_score(point: BranchPoint, answer: str | None) -> float:
    """``answer``'s score at ``point``, from 0 (wrong) to 1 (right); :class:`InputError` if nothing judges.

    A verifier that raises or returns a bad score is a :class:`VerifierError` naming it: a broken
    verifier must not look like a wrong answer (:func:`regrpo.verifier.score_answer`).
    """
    if point.answer is not None:
        return 1.0 if point.answer.check(answer) else 0.0
    if point.verifier is None:
        raise InputError(f"branch point {point.id} has no answer spec and no verifier to score an answer")
    verifier = point.verifier
    return score_answer(resolve(verifier), verifier.task, answer, name=verifier.name)
