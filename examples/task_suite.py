"""The built-in task suite in one page: generate a tiny suite, show a task of each category, run a reference.

Usage::

    .venv/bin/python examples/task_suite.py            # about 30 s on a laptop CPU (loads easyocr once)

Each task has a question, images, a checkable answer and a reference solution: the tool calls that
solve it. ``run_reference`` executes that solution with the real tools and checks every step.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from regrpo.tasks.reference import reference_tools, run_reference
from regrpo.tasks.suite import CATEGORIES, generate_suite, load_suite


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        suite_dir = generate_suite(Path(tmp) / "suite", n=len(CATEGORIES), seed=0)
        tasks = load_suite(suite_dir)
        print(f"generated {len(tasks)} tasks in {suite_dir}\n")
        for task in tasks:
            calls = " -> ".join(f"{step.tool}({', '.join(f'{k}={v!r}' for k, v in step.arguments.items())})"
                                for step in task.reference)  # fmt: skip
            print(f"[{task.category}, difficulty {task.difficulty}] {task.question}")
            print(f"  image: {Path(task.images[0]).name}   answer: {task.answer.display()}")
            print(f"  reference: {calls}\n")

        task = next(t for t in tasks if t.category == "receipt")
        print(f"running the reference of {task.id} with the real tools ...")
        run = run_reference(task, reference_tools())
        for step, output in zip(task.reference, run.outputs, strict=False):
            print(f"  {step.tool}: {str(output)[:100]!s}")
        print(f"  ok={run.ok}  check({task.answer.display()!r}) = {task.check(task.answer.display())}")
        print(f"  check('no idea') = {task.check('no idea')}")


if __name__ == "__main__":
    main()
