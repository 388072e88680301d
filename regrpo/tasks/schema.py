"""The task record: a question, its images, a checkable answer and a reference tool-call solution.

msgspec Structs, because tasks live on disk as JSON lines (``tasks.jsonl``, see
``docs/task_suite.md``). In the file, ``images`` are paths relative to the suite directory;
:func:`regrpo.tasks.suite.load_suite` makes them absolute.

A :class:`ReferenceStep` names a tool call by the ids the episode's ``ImageStore`` will give: the
task's images are ``img_0``, ``img_1``, ... and each image a tool makes takes the next id, so a
reference can crop ``img_0`` and then read ``img_1``. ``expects`` are strings that must appear in the
step's real output (compared by :func:`regrpo.tasks.verifiers.contains_normalized`): the prices an
OCR step must read, the fact a search must return, the value the last step must produce.
``derived_from`` says which earlier output each box, angle and image id was copied from
(:func:`regrpo.tasks.reference.derivation_errors` checks it against the real outputs).
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from regrpo.tasks import verifiers

__all__ = ["VARIANTS", "AnswerKind", "AnswerSpec", "ReferenceStep", "Task", "Variant"]

AnswerKind = Literal["number", "text", "set"]
Variant = Literal["train", "holdout"]
"""Which side of the train / held-out split a task was generated for. A ``"holdout"`` task comes from
question phrasings, fonts and a layout or value range no ``"train"`` task uses."""
VARIANTS: tuple[Variant, ...] = ("train", "holdout")


class AnswerSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The reference answer and how to compare a model's answer with it."""

    kind: AnswerKind
    value: float | str | list[str]
    """A number for ``"number"``, a string for ``"text"``, a list of strings for ``"set"``."""
    tolerance: float = 0.0
    """Absolute tolerance for numbers (0.005 accepts any rounding to cents); ignored otherwise."""

    def check(self, answer: str | None) -> bool:
        """Whether ``answer`` (a model's final answer text) is right."""
        if answer is None:
            return False
        if self.kind == "number":
            return isinstance(self.value, (int, float)) and verifiers.number_matches(
                answer, float(self.value), self.tolerance
            )
        if self.kind == "text":
            return isinstance(self.value, str) and verifiers.text_matches(answer, self.value)
        return isinstance(self.value, list) and verifiers.set_matches(answer, self.value)

    def display(self) -> str:
        """The answer as a person would write it (``42.5``, ``KX-4821``, ``red, blue``)."""
        if isinstance(self.value, list):
            return ", ".join(self.value)
        if isinstance(self.value, float) and self.value.is_integer():
            return str(int(self.value))
        return str(self.value)


class ReferenceStep(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One tool call of a task's reference solution."""

    tool: str
    arguments: dict[str, Any]
    expects: list[str] = []
    """Strings that must appear (after :func:`~regrpo.tasks.verifiers.squash`) in the step's output."""
    derived_from: dict[str, str] = {}
    """Where an argument's value was observed: argument name -> ``"<step>.<key>[.<key or index>...]"``,
    a path into an earlier step's JSON output whose value the argument equals exactly
    (``{"box": "0.small_text.0", "image": "1.image"}``). Every box, region, angle and tool-made image
    id a reference uses is listed, so no argument comes from hidden generator state."""


class Task(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One verifiable multimodal task."""

    id: str
    category: str
    difficulty: int
    """1 (easy) to 3 (hard): text size, noise and the number of items grow with it."""
    question: str
    images: list[str]
    """Image file paths; absolute after :func:`~regrpo.tasks.suite.load_suite`."""
    answer: AnswerSpec
    reference: list[ReferenceStep]
    seed: int
    """The seed this task was generated from (the suite seed and the task's index mixed)."""
    meta: dict[str, Any] = {}
    """Generator details: font, template, rendered text (for OCR accuracy), background, ..."""
    variant: Variant = "train"
    """The variant it was generated from; :func:`~regrpo.tasks.suite.split` holds out ``"holdout"`` ones."""

    def check(self, answer: str | None) -> bool:
        """Whether a model's final answer text is right."""
        return self.answer.check(answer)
