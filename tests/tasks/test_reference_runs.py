"""THE key property of the suite: each reference solution, run with the real tools, gets the answer.

Real easyocr, the shipped ultralytics checkpoint, real BM25 search: nothing is stubbed. A sample of
5 tasks per category (all three difficulties) must reach >= 95 %. The honesty checks show that the
tools are needed: rotated labels are not read without the rotate step, and the fine print of a
``tiny_text`` page is not read without cropping it (the ``ocr`` tool reads at most ``max_side`` px).
"""

from __future__ import annotations

import asyncio

import pytest
from PIL import Image

from regrpo.tasks.reference import (
    DERIVED_ARGUMENTS,
    ReferenceRun,
    derivation_errors,
    output_text,
    reference_tools,
    run_reference,
)
from regrpo.tasks.schema import AnswerSpec, ReferenceStep, Task
from regrpo.tasks.suite import CATEGORIES, generate_suite, generate_task, load_suite
from regrpo.tasks.verifiers import contains_normalized
from regrpo.tools import Toolbox, ToolContext
from regrpo.tools.calculator import calculator
from regrpo.tools.detect import DEFAULT_CHECKPOINT
from regrpo.tools.images import ImageStore
from regrpo.tools.ocr import MAX_SIDE

PER_CATEGORY = 5


@pytest.fixture(scope="module")
def toolbox() -> Toolbox:
    return Toolbox(reference_tools(), default_timeout_s=120.0)


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> list[Task]:
    categories = [c for c in CATEGORIES if c != "count" or DEFAULT_CHECKPOINT.is_file()]
    n = PER_CATEGORY * len(categories)
    return load_suite(
        generate_suite(tmp_path_factory.mktemp("ref") / "s", n=n, seed=2024, categories=categories)
    )


@pytest.mark.slow
def test_reference_solutions_reach_95_percent_with_the_real_tools(sample, toolbox):
    if not DEFAULT_CHECKPOINT.is_file():
        pytest.fail(
            f"the shipped detector checkpoint {DEFAULT_CHECKPOINT} is missing; count tasks cannot run"
        )
    runs: list[tuple[Task, ReferenceRun]] = [(task, run_reference(task, toolbox)) for task in sample]
    failures = [f"{task.id}: {run.reason}" for task, run in runs if not run.ok]
    rate = 1 - len(failures) / len(runs)
    assert rate >= 0.95, f"{rate:.0%} of references held; failures:\n" + "\n".join(failures)
    for category in {t.category for t in sample}:
        assert any(run.ok for task, run in runs if task.category == category), category


def _read_unaided(tasks: list[Task], toolbox: Toolbox) -> int:
    """How many of ``tasks`` OCR on the image as given (no other tool) already reads the answer of."""
    read = 0
    for task in tasks:
        store = ImageStore()
        store.add(task.images[0])
        outcome = asyncio.run(toolbox.call("ocr", {"image": "img_0"}, ToolContext(store)))
        assert outcome.ok, outcome.message
        wanted = [w for step in task.reference if step.tool == "ocr" for w in step.expects]
        read += all(contains_normalized(output_text(outcome.output), w) for w in wanted)
    return read


@pytest.mark.slow
def test_rotated_labels_need_the_rotate_step(sample, toolbox):
    rotated = [t for t in sample if t.category == "rotated_text"]
    read_anyway = _read_unaided(rotated, toolbox)
    assert read_anyway <= len(rotated) // 5, (
        f"{read_anyway}/{len(rotated)} rotated labels were read unrotated"
    )


@pytest.mark.slow
def test_fine_print_needs_the_crop(sample, toolbox):
    """OCR of the whole (large) page works at the engine's ``max_side`` and misses the fine print."""
    tiny = [t for t in sample if t.category == "tiny_text"]
    assert tiny and all(Image.open(t.images[0]).width > MAX_SIDE for t in tiny)
    read_anyway = _read_unaided(tiny, toolbox)
    assert read_anyway <= len(tiny) // 5, (
        f"{read_anyway}/{len(tiny)} fine prints were read from the whole page"
    )


def test_a_wrong_expectation_is_reported_with_its_step():
    task = Task(
        id="t", category="expression", difficulty=1, question="?", images=[],
        answer=AnswerSpec("number", 7.0),
        reference=[ReferenceStep("calculator", {"expression": "3 + 4"}, ["8"])], seed=0,
    )  # fmt: skip
    run = run_reference(task, [calculator])
    assert not run.ok and run.failed_step == 0 and "lacks ['8']" in (run.reason or "")
    good = run_reference(
        Task(**{**{f: getattr(task, f) for f in task.__struct_fields__},
                "reference": [ReferenceStep("calculator", {"expression": "3 + 4"}, ["7"])]}),
        [calculator],
    )  # fmt: skip
    assert good.ok and good.outputs == [7] and good.failed_step is None


def test_a_failing_tool_call_stops_the_run():
    task = Task(
        id="t", category="expression", difficulty=1, question="?", images=[],
        answer=AnswerSpec("number", 7.0),
        reference=[ReferenceStep("calculator", {"expression": "3 +"}),
                   ReferenceStep("calculator", {"expression": "7"})],
        seed=0,
    )  # fmt: skip
    run = run_reference(task, [calculator])
    assert (
        not run.ok and run.failed_step == 0 and len(run.outputs) == 1 and "ArgInvalid" in (run.reason or "")
    )


def test_a_wrong_final_answer_fails_after_the_last_step():
    task = Task(
        id="t", category="expression", difficulty=1, question="?", images=[],
        answer=AnswerSpec("number", 8.0), seed=0,
        reference=[ReferenceStep("calculator", {"expression": "3 + 4"})],
    )  # fmt: skip
    run = run_reference(task, [calculator])
    assert not run.ok and run.failed_step == 1


def test_every_box_angle_and_made_image_of_every_reference_names_its_source():
    """No reference argument comes from generator state: each one points at an earlier output."""
    for category in CATEGORIES:
        for seed in range(3):
            for difficulty in (1, 2, 3):
                task, images = generate_task(category, difficulty, seed, "t")
                for index, step in enumerate(task.reference):
                    derived = {n for n in DERIVED_ARGUMENTS if n in step.arguments}
                    if step.arguments.get("image", "img_0") != "img_0":
                        derived.add("image")
                    assert derived <= step.derived_from.keys(), (task.category, index, step)
                    for path in step.derived_from.values():
                        assert int(path.split(".")[0]) < index, (task.category, index, path)


def test_a_box_only_the_generator_knew_fails_the_run_before_the_call():
    task = Task(
        id="t", category="tiny_text", difficulty=1, question="?", images=[],
        answer=AnswerSpec("number", 7.0), seed=0,
        reference=[ReferenceStep("calculator", {"expression": "3 + 4"}),
                   ReferenceStep("crop", {"image": "img_0", "box": [1, 2, 3, 4]})],
    )  # fmt: skip
    run = run_reference(task, [calculator])
    assert not run.ok and run.failed_step == 1 and "box names no source" in (run.reason or "")
    assert "step 1 (crop): box names no source" in derivation_errors(task, [7, None])
    observed = {"text": "", "lines": [], "small_text": [[1, 2, 3, 4]]}
    step = ReferenceStep(
        "crop", {"image": "img_0", "box": [1, 2, 3, 4]}, derived_from={"box": "0.small_text.0"}
    )
    copied = Task(
        **{
            **{f: getattr(task, f) for f in task.__struct_fields__},
            "reference": [task.reference[0], step],
            "images": ["page.png"],
        }
    )
    assert derivation_errors(copied, [observed, None]) == []
    assert "is not [1, 2, 3, 5]" in derivation_errors(copied, [{"small_text": [[1, 2, 3, 5]]}, None])[0]
    assert "has no '0.small_text.0'" in derivation_errors(copied, [{"text": ""}, None])[0]


SEEDS = (11, 12)


@pytest.mark.slow
@pytest.mark.parametrize("category", ["tiny_text", "rotated_text"])
def test_references_use_only_observed_boxes_and_angles_with_the_real_tools(category, toolbox, tmp_path):
    """Real easyocr: the ocr tool reports the crop box / rotation the reference then uses, and it reads.

    Every step's ``expects`` holds and the final output holds the answer; the answer check itself is
    the verifier's (text answers are compared with the whole last output).
    """
    failures = []
    for seed in SEEDS:
        for difficulty in (1, 2, 3):
            task, images = generate_task(category, difficulty, seed, f"{category}-{seed}-{difficulty}")
            paths = []
            for k, image in enumerate(images):
                Image.fromarray(image).save(tmp_path / f"{task.id}-{k}.png")
                paths.append(str(tmp_path / f"{task.id}-{k}.png"))
            task = Task(**{**{f: getattr(task, f) for f in task.__struct_fields__}, "images": paths})
            run = run_reference(task, toolbox)
            reached_answer = run.ok or run.failed_step == len(task.reference)
            final = output_text(run.outputs[-1]) if run.outputs else ""
            if (
                not reached_answer
                or derivation_errors(task, run.outputs)
                or not contains_normalized(
                    final,
                    task.answer.display()
                    if task.answer.kind == "text"
                    else str(task.reference[-1].expects[0]),
                )
            ):
                failures.append(f"{task.id}: {run.reason}")
    assert not failures, "\n".join(failures)
