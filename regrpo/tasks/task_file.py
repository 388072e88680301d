"""A user's own task set: one JSON object per line, answered by an expected value or by a verifier.

The built-in suite and GTA are two sources of tasks; this is the third, for an app's own traffic
(issue 13). A line holds the task text, optional image paths (relative to the file's folder), and
either an expected answer (checked as the suite checks its own: ``number``, ``text`` or ``set``) or a
verifier, ``"package.module:function"``, a plain function ``(task, answer) -> float`` in ``[0, 1]``::

    {"id": "r1", "question": "What is the total?", "images": ["r1.png"], "answer": 42.5, "tolerance": 0.01}
    {"question": "Which city is on the sign?", "images": ["signs/7.jpg"], "answer": "Harbor"}
    {"question": "Which colours are shown?", "images": ["a.png"], "answer": ["red", "blue"]}
    {"question": "Summarise the chart", "images": ["c.png"], "verifier": "myapp.checks:summary_ok"}

``kind`` is inferred from the answer (a number, a string, a list of strings) or given explicitly;
``id`` defaults to ``<file stem>-<line>``, ``category`` to ``"user"``. A verifier's score of at least
``pass_score`` (default 0.5) counts as solved. Loading imports each verifier once, so a task file is
trusted input, like a Python config. Every problem is a :class:`TaskFileError` naming the file, the
line and the field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from regrpo.errors import InputError
from regrpo.tasks.schema import AnswerSpec, ReferenceStep
from regrpo.verifier import Verifier, VerifierError, import_verifier, score_answer

__all__ = ["TaskFileError", "UserTask", "VerifierAnswer", "load_task_file"]

_FIELDS = {
    "id",
    "question",
    "images",
    "answer",
    "kind",
    "tolerance",
    "verifier",
    "pass_score",
    "category",
    "meta",
}


class TaskFileError(InputError):
    """A task file that cannot be read: the message names the file, the line and the field."""


@dataclass(frozen=True)
class VerifierAnswer:
    """An answer judged by a user's verifier instead of compared with a value."""

    name: str
    """The verifier's import path, ``"package.module:function"`` (recorded with results)."""
    function: Verifier = field(repr=False, compare=False)
    pass_score: float = 0.5

    def display(self) -> str:
        return f"(judged by {self.name})"


@dataclass(frozen=True)
class UserTask:
    """One task of a user's task set, shaped like :class:`~regrpo.tasks.schema.Task` where evaluation
    and the gate read it (``id``, ``category``, ``difficulty``, ``question``, ``images``, ``answer``,
    ``check``). It has no reference solution: learning from it needs no reference (issue 13)."""

    id: str
    question: str
    images: list[str]
    """Absolute image paths."""
    answer: AnswerSpec | VerifierAnswer
    category: str = "user"
    difficulty: int = 1
    meta: dict[str, Any] = field(default_factory=dict)
    reference: list[ReferenceStep] = field(default_factory=list)
    variant: str = "holdout"
    """A user's tasks are never part of the built-in suite's training split."""

    def score(self, answer: str | None) -> float:
        """The answer's score in ``[0, 1]``: 1/0 for an expected value, the verifier's otherwise.

        A verifier that raises or returns something that is not a number in ``[0, 1]`` is a
        :class:`TaskFileError` naming it: a broken verifier must not look like a wrong answer.
        """
        if isinstance(self.answer, AnswerSpec):
            return 1.0 if self.answer.check(answer) else 0.0
        try:
            return score_answer(self.answer.function, self, answer, name=self.answer.name)
        except VerifierError as exc:
            raise TaskFileError(f"{exc} (task {self.id})") from exc.__cause__

    def check(self, answer: str | None) -> bool:
        """Whether ``answer`` solves the task (a verifier's score of at least its ``pass_score``)."""
        threshold = self.answer.pass_score if isinstance(self.answer, VerifierAnswer) else 1.0
        return self.score(answer) >= threshold


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _answer(row: dict[str, Any], where: str, verifiers: dict[str, Verifier]) -> AnswerSpec | VerifierAnswer:
    has_answer, has_verifier = "answer" in row, "verifier" in row
    if has_answer == has_verifier:
        raise TaskFileError(f"{where}: give exactly one of 'answer' (the expected value) and 'verifier'")
    if has_verifier:
        name = row["verifier"]
        if not isinstance(name, str):
            raise TaskFileError(f"{where}: 'verifier' must be a string 'package.module:function'")
        pass_score = row.get("pass_score", 0.5)
        if (
            isinstance(pass_score, bool)
            or not isinstance(pass_score, (int, float))
            or not 0 < pass_score <= 1
        ):
            raise TaskFileError(f"{where}: 'pass_score' must be a number in (0, 1], got {pass_score!r}")
        if name not in verifiers:
            try:
                verifiers[name] = import_verifier(name, TaskFileError)
            except TaskFileError as exc:
                raise TaskFileError(f"{where}: {exc}") from exc.__cause__
        return VerifierAnswer(name, verifiers[name], float(pass_score))
    value = row["answer"]
    kind: Any = row.get("kind")
    if kind is None:
        if _is_number(value):
            kind = "number"
        elif isinstance(value, str):
            kind = "text"
        elif isinstance(value, list):
            kind = "set"
    valid = {
        "number": _is_number(value),
        "text": isinstance(value, str) and bool(value.strip()),
        "set": isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value),
    }
    if kind not in ("number", "text", "set"):
        raise TaskFileError(f"{where}: 'kind' must be number, text or set, got {kind!r}")
    if not valid[kind]:
        raise TaskFileError(
            f"{where}: a {kind} answer must be "
            + {"number": "a number", "text": "a non-empty string", "set": "a non-empty list of strings"}[kind]
            + f", got {value!r}"
        )
    tolerance = row.get("tolerance", 0.0)
    if not _is_number(tolerance) or tolerance < 0:
        raise TaskFileError(f"{where}: 'tolerance' must be a number >= 0, got {tolerance!r}")
    return AnswerSpec(
        kind=kind, value=float(value) if kind == "number" else value, tolerance=float(tolerance)
    )


def _task(row: Any, where: str, folder: Path, default_id: str, verifiers: dict[str, Verifier]) -> UserTask:
    if not isinstance(row, dict):
        raise TaskFileError(f"{where}: each line must be a JSON object, got {type(row).__name__}")
    if unknown := sorted(set(row) - _FIELDS):
        raise TaskFileError(f"{where}: unknown fields {unknown}; a task line may hold {sorted(_FIELDS)}")
    question = row.get("question")
    if not isinstance(question, str) or not question.strip():
        raise TaskFileError(f"{where}: 'question' must be a non-empty string (the task the agent is given)")
    images = row.get("images", [])
    if not isinstance(images, list) or not all(isinstance(p, str) and p for p in images):
        raise TaskFileError(f"{where}: 'images' must be a list of image paths")
    paths = []
    for relative in images:
        path = (folder / Path(relative).expanduser()).resolve()
        if not path.is_file():
            raise TaskFileError(f"{where}: image {relative!r} not found (paths are relative to {folder})")
        paths.append(str(path))
    for name in ("id", "category"):
        if name in row and (not isinstance(row[name], str) or not row[name].strip()):
            raise TaskFileError(f"{where}: {name!r} must be a non-empty string")
    meta = row.get("meta", {})
    if not isinstance(meta, dict):
        raise TaskFileError(f"{where}: 'meta' must be an object")
    return UserTask(
        id=row.get("id", default_id),
        question=question,
        images=paths,
        answer=_answer(row, where, verifiers),
        category=row.get("category", "user"),
        meta=meta,
    )


def load_task_file(path: str | Path) -> list[UserTask]:
    """The tasks of a JSONL task file (module docstring), in file order; blank lines are skipped.

    Raises :class:`TaskFileError` for a missing file, a line that is not a JSON object, an unknown or
    ill-typed field, a missing image, an unimportable verifier, or two tasks with one id.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise TaskFileError(f"task file {str(file)!r} not found; write one JSON object per line")
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TaskFileError(f"cannot read task file {str(file)!r}: {exc}") from exc
    tasks: list[UserTask] = []
    seen: dict[str, int] = {}
    verifiers: dict[str, Verifier] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{file}, line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TaskFileError(f"{where}: not JSON: {exc.msg} (column {exc.colno})") from None
        task = _task(row, where, file.parent.resolve(), f"{file.stem}-{number}", verifiers)
        if task.id in seen:
            raise TaskFileError(f"{where}: id {task.id!r} is already used on line {seen[task.id]}")
        seen[task.id] = number
        tasks.append(task)
    if not tasks:
        raise TaskFileError(f"task file {str(file)!r} holds no tasks")
    return tasks
