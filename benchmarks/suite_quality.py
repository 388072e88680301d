"""Task-suite quality: reference accuracy per category, OCR character accuracy, and tool necessity.

For a freshly generated suite (``--per-category`` tasks of each category, all difficulties):

a. Reference accuracy: the share of tasks whose reference solution, executed with the real tools
   (easyocr, the shipped detector, BM25 search) through ``run_reference``, yields the right answer.
b. OCR character accuracy, ``1 - CER``: for every reference step that calls ``ocr``, its output text
   against the text rendered into that image (``task.meta["text"]``), both whitespace-collapsed and
   lower-cased; CER is the Levenshtein distance over the reference length.
c. Tool necessity ("honesty"): for rotated_text and tiny_text, how often OCR on the image *as given*
   (no rotate / no crop+zoom) already contains the answer. Low is what makes those categories need
   their tools.

Usage::

    .venv/bin/python benchmarks/suite_quality.py                      # 5 per category, about 3 min on 2 cores
    .venv/bin/python benchmarks/suite_quality.py --per-category 20 --seed 7
    .venv/bin/python benchmarks/suite_quality.py --categories receipt lookup
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from regrpo.tasks.reference import output_text, reference_tools, run_reference
from regrpo.tasks.schema import Task
from regrpo.tasks.suite import CATEGORIES, generate_suite, load_suite
from regrpo.tasks.verifiers import contains_normalized
from regrpo.tools import Toolbox, ToolContext
from regrpo.tools.images import ImageStore


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions) between ``a`` and ``b``."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def _flat(text: str) -> str:
    return " ".join(text.lower().split())


def _ocr_unaided(task: Task, toolbox: Toolbox) -> bool:
    """Whether OCR on the task's first image, with no other tool, already contains the answer."""
    store = ImageStore()
    store.add(task.images[0])
    outcome = asyncio.run(toolbox.call("ocr", {"image": "img_0"}, ToolContext(store)))
    wanted = [w for step in task.reference if step.tool == "ocr" for w in step.expects]
    return outcome.ok and all(contains_normalized(output_text(outcome.output), w) for w in wanted)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-category", type=int, default=5)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--categories", nargs="*", default=list(CATEGORIES), choices=CATEGORIES)
    args = parser.parse_args()

    toolbox = Toolbox(reference_tools(), default_timeout_s=120.0)
    with tempfile.TemporaryDirectory() as tmp:
        n = args.per_category * len(args.categories)
        tasks = load_suite(
            generate_suite(Path(tmp) / "suite", n=n, seed=args.seed, categories=args.categories)
        )
        ok: dict[str, list[bool]] = defaultdict(list)
        edits: dict[str, list[tuple[int, int]]] = defaultdict(list)
        unaided: dict[str, list[bool]] = defaultdict(list)
        seconds: dict[str, float] = defaultdict(float)
        for task in tasks:
            started = time.perf_counter()
            run = run_reference(task, toolbox)
            seconds[task.category] += time.perf_counter() - started
            ok[task.category].append(run.ok)
            if not run.ok:
                print(f"  failed {task.id}: {run.reason}")
            truth = _flat(" ".join(task.meta.get("text", [])))
            for step, output in zip(task.reference, run.outputs, strict=False):
                if step.tool == "ocr" and output is not None and truth:
                    edits[task.category].append((levenshtein(_flat(output_text(output)), truth), len(truth)))
            if task.category in ("rotated_text", "tiny_text"):
                unaided[task.category].append(_ocr_unaided(task, toolbox))

    print(f"\nsuite seed {args.seed}, {args.per_category} tasks per category")
    print(f"{'category':<14}{'reference ok':>14}{'OCR char acc':>14}{'OCR alone reads':>17}{'s/task':>8}")
    total_ok = total = 0
    for category in args.categories:
        results = ok[category]
        total_ok, total = total_ok + sum(results), total + len(results)
        dist = sum(d for d, _ in edits[category])
        length = sum(n for _, n in edits[category])
        char_acc = f"{1 - dist / length:.3f}" if length else "-"
        alone = f"{sum(unaided[category])}/{len(unaided[category])}" if unaided[category] else "-"
        per_task = seconds[category] / max(1, len(results))
        print(f"{category:<14}{sum(results):>8}/{len(results):<5}{char_acc:>14}{alone:>17}{per_task:>8.1f}")
    all_edits = [e for values in edits.values() for e in values]
    overall_acc = 1 - sum(d for d, _ in all_edits) / max(1, sum(n for _, n in all_edits))
    print(f"{'all':<14}{total_ok:>8}/{total:<5}{overall_acc:>14.3f}")


if __name__ == "__main__":
    main()
