"""Run a task's reference solution with the real tools, and say whether (and where) it held.

A reference is only worth something if the real tools carry it out: the OCR must read the prices,
the search must return the fact, the last step must produce the answer. :func:`run_reference` makes
an ``ImageStore`` holding the task's images (``img_0``, ``img_1``, ... in order), calls each step
through :class:`~regrpo.tools.Toolbox` (validation, deadline, the same path the agent takes), checks
each step's ``expects`` against its output text, and finally checks the last step's output with
``task.check``. It stops at the first step that fails and reports it. Before each call it also checks
the step's ``derived_from``: every box, angle and image id must equal the value at its path in an
earlier step's real output (:func:`derivation_errors`), so a reference cannot use what only the
generator knew.

How an output becomes text for ``expects``: an OCR result is its ``text``; a search result is every
result's title and text; a count is its ``count``; anything else is its JSON.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from regrpo.tasks import verifiers
from regrpo.tasks.schema import AnswerSpec, Task
from regrpo.tasks.verifiers import contains_normalized
from regrpo.tools import Tool, Toolbox, ToolContext
from regrpo.tools.images import ImageStore

__all__ = [
    "DERIVED_ARGUMENTS",
    "ReferenceRun",
    "arun_reference",
    "derivation_errors",
    "output_text",
    "reference_tools",
    "run_reference",
]

DERIVED_ARGUMENTS = ("box", "region", "angle")
"""Arguments no task text states: a reference step must say (``derived_from``) where it saw them."""


@dataclass(frozen=True)
class ReferenceRun:
    """What running a reference solution did."""

    ok: bool
    outputs: list[Any] = field(default_factory=list)
    """Each executed step's output (``None`` for a failed call), in order."""
    failed_step: int | None = None
    """Index of the first step that failed, or ``len(reference)`` when only the final answer check failed."""
    reason: str | None = None


def output_text(output: Any) -> str:
    """The text of a tool output that ``expects`` strings and answers are matched against."""
    if isinstance(output, dict):
        if isinstance(output.get("text"), str) and "lines" in output:  # ocr
            return str(output["text"])
        if isinstance(output.get("results"), list):  # search
            return "\n".join(f"{r.get('title', '')}\n{r.get('text', '')}" for r in output["results"])
        if "count" in output:  # count
            return str(output["count"])
    if isinstance(output, (int, float, str)):
        return str(output)
    return json.dumps(output, ensure_ascii=False)


def _resolve(outputs: list[Any], path: str) -> Any:
    """The value at ``"<step>.<key or index>..."`` in ``outputs``; ``KeyError`` if there is none."""
    first, *keys = path.split(".")
    value: Any = outputs[int(first)]
    for key in keys:
        value = value[int(key)] if isinstance(value, list) else value[key]
    return value


def _underived(task: Task, index: int) -> list[str]:
    """Arguments of step ``index`` that should name their source and do not."""
    step, own = task.reference[index], {f"img_{k}" for k in range(len(task.images))}
    missing = [name for name in DERIVED_ARGUMENTS if name in step.arguments]
    if isinstance(step.arguments.get("image"), str) and step.arguments["image"] not in own:
        missing.append("image")  # an image a tool made: its id is in that tool's output
    return [name for name in missing if name not in step.derived_from]


def derivation_errors(task: Task, outputs: list[Any], upto: int | None = None) -> list[str]:
    """Why steps ``0 .. upto - 1`` (default all) of ``task.reference`` use values not observed before.

    ``outputs`` are the real outputs of the steps before (at least ``upto - 1`` of them). Empty when
    every box, region, angle and tool-made image id equals the value its ``derived_from`` path names
    in an earlier step's output.
    """
    errors = []
    for index, step in enumerate(task.reference[: len(task.reference) if upto is None else upto]):
        errors += [f"step {index} ({step.tool}): {name} names no source" for name in _underived(task, index)]
        for name, path in step.derived_from.items():
            source = int(path.split(".")[0]) if path.split(".")[0].isdigit() else -1
            if not 0 <= source < min(index, len(outputs)):
                errors.append(f"step {index} ({step.tool}): {name} source {path!r} is not an earlier step")
                continue
            try:
                seen = _resolve(outputs, path)
            except (KeyError, IndexError, TypeError, ValueError):
                errors.append(f"step {index} ({step.tool}): step {source}'s output has no {path!r}")
                continue
            if step.arguments.get(name) != seen:
                errors.append(
                    f"step {index} ({step.tool}): {name} {step.arguments.get(name)!r} is not "
                    f"{seen!r}, observed at {path!r}"
                )
    return errors


def reference_tools() -> list[Tool]:
    """The toolbox references are written for: ``default_tools()``, with ocr, detect, count, search."""
    from regrpo.tools import default_tools

    return default_tools()


async def arun_reference(task: Task, tools: Toolbox | Iterable[Tool]) -> ReferenceRun:
    """:func:`run_reference` for callers already inside an event loop."""
    toolbox = tools if isinstance(tools, Toolbox) else Toolbox(list(tools), default_timeout_s=120.0)
    store = ImageStore()
    for path in task.images:
        store.add(path)
    context = ToolContext(images=store)
    outputs: list[Any] = []
    for index, step in enumerate(task.reference):
        underived = derivation_errors(task, outputs, upto=index + 1)
        if underived:
            return ReferenceRun(False, outputs, index, "; ".join(underived))
        outcome = await toolbox.call(step.tool, step.arguments, context)
        outputs.append(outcome.output)
        if not outcome.ok:
            reason = f"step {index} ({step.tool}) failed: {outcome.error_type}: {outcome.message}"
            return ReferenceRun(False, outputs, index, reason)
        text = output_text(outcome.output)
        missing = [want for want in step.expects if not contains_normalized(text, want)]
        if missing:
            reason = f"step {index} ({step.tool}) output lacks {missing}: {text[:300]!r}"
            return ReferenceRun(False, outputs, index, reason)
    final = output_text(outputs[-1]) if outputs else ""
    if not output_holds_answer(task.answer, final):
        reason = f"the last output {final[:200]!r} does not check as answer {task.answer.display()!r}"
        return ReferenceRun(False, outputs, len(task.reference), reason)
    return ReferenceRun(True, outputs)


def output_holds_answer(answer: AnswerSpec, output: str) -> bool:
    """Whether a reference's last tool output holds the answer.

    A text answer must occur there as whole words, since an OCR output holds the label's other lines
    too; a model's *answer* is held to the strict check (:func:`~regrpo.tasks.verifiers.text_matches`).
    """
    if answer.kind == "text" and isinstance(answer.value, str):
        return verifiers.text_in_output(output, answer.value)
    return answer.check(output)


def run_reference(task: Task, tools: Toolbox | Iterable[Tool]) -> ReferenceRun:
    """Execute ``task.reference`` with ``tools`` (a ``Toolbox`` or tools to build one from).

    Use :func:`reference_tools` for the real toolbox. Must not be called from a running event loop
    (use :func:`arun_reference` there).
    """
    return asyncio.run(arun_reference(task, tools))
