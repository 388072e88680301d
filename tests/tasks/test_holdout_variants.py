"""Held-out tasks differ from training tasks in more than the seed (issue 11).

The split is decided before generation (``holdout_indices``); each held-out task comes from its
category's held-out variant: question phrasings, fonts and a layout or value range that no training
task uses. These tests check the disjointness on a 120-task suite, the split's determinism, and (slow,
real tools) that every held-out variant's reference still solves its task.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from PIL import Image

from regrpo.tasks import render
from regrpo.tasks.reference import reference_tools, run_reference
from regrpo.tasks.schema import Task
from regrpo.tasks.suite import (
    CATEGORIES,
    HOLDOUT_FRACTION,
    SuiteError,
    generate_suite,
    generate_task,
    holdout_indices,
    load_suite,
    split,
)
from regrpo.tools import Toolbox
from regrpo.tools.detect import DEFAULT_CHECKPOINT

N = 120  # 20 tasks per category, 5 of them held out


@pytest.fixture(scope="module")
def suite_dir(tmp_path_factory) -> Path:
    return generate_suite(tmp_path_factory.mktemp("variants") / "s", n=N, seed=5)


@pytest.fixture(scope="module")
def tasks(suite_dir) -> list[Task]:
    return load_suite(suite_dir)


def _by_variant(tasks: list[Task], category: str) -> tuple[list[Task], list[Task]]:
    members = [t for t in tasks if t.category == category]
    return [t for t in members if t.variant == "train"], [t for t in members if t.variant == "holdout"]


def _operands(task: Task) -> list[int]:
    return [int(n) for n in re.findall(r"\d+", task.reference[-1].arguments["expression"])]


def _image_size(task: Task) -> tuple[int, int]:
    with Image.open(task.images[0]) as image:
        return image.size


# What each category's held-out variant changes besides phrasings and fonts, read off the task
# itself (its reference, its image), not only off the generator's own meta labels.
_HELD_OUT_AXIS: dict[str, Callable[[Task], Any]] = {
    "receipt": lambda t: tuple(t.meta["price_range"]),
    "count": _image_size,  # portrait scenes
    "expression": lambda t: tuple(sorted(set(_operands(t)))),
    "tiny_text": lambda t: t.meta["fine_print_box"][1] < _image_size(t)[1] // 2,  # above the middle
    "rotated_text": lambda t: t.meta["angle"],
    "lookup": lambda t: t.meta["font"],
}


def test_the_suite_holds_out_a_quarter_of_each_category(tasks):
    for category in CATEGORIES:
        train, held = _by_variant(tasks, category)
        assert len(held) == round(HOLDOUT_FRACTION * (N // len(CATEGORIES))) == 5, category
        assert {t.difficulty for t in train} == {1, 2, 3}, category


@pytest.mark.parametrize("category", CATEGORIES)
def test_held_out_phrasings_fonts_and_axis_values_never_occur_in_training(tasks, category):
    train, held = _by_variant(tasks, category)
    train_phrasings, held_phrasings = {t.meta["phrasing"] for t in train}, {t.meta["phrasing"] for t in held}
    assert held_phrasings and train_phrasings.isdisjoint(held_phrasings)
    assert not {t.question for t in train} & {t.question for t in held}
    if category != "count":  # scenes have no text
        train_fonts, held_fonts = {t.meta["font"] for t in train}, {t.meta["font"] for t in held}
        assert train_fonts <= set(render.FONTS) and held_fonts <= set(render.HOLDOUT_FONTS)
        assert train_fonts.isdisjoint(held_fonts)
    axis = _HELD_OUT_AXIS[category]
    train_values, held_values = {axis(t) for t in train}, {axis(t) for t in held}
    if category == "expression":  # operand sets: every held-out number is outside training's range
        assert all(n < 100 for ops in train_values for n in ops if n > 1)
        assert all(n >= 100 for ops in held_values for n in ops)
    else:
        assert train_values.isdisjoint(held_values), (train_values, held_values)


def test_held_out_receipts_print_prices_training_never_shows(tasks):
    train, held = _by_variant(tasks, "receipt")
    prices = {v: [float(p) for t in part for p in t.reference[0].expects if "%" not in p]
              for v, part in (("train", train), ("holdout", held))}  # fmt: skip
    assert prices["holdout"] and min(prices["holdout"]) >= 30.0 > max(prices["train"])


def test_held_out_angles_count_scenes_and_fine_print_differ_in_the_pixels(tasks):
    _, held_counts = _by_variant(tasks, "count")
    assert all(_image_size(t) == (360, 480) for t in held_counts)  # (width, height): portrait
    train_tiny, held_tiny = _by_variant(tasks, "tiny_text")
    for t in held_tiny:
        width, height = _image_size(t)
        x1, y1, _, _ = t.meta["fine_print_box"]
        assert x1 >= width * 2 // 3 - 8 and y1 < height // 2, t.id
    assert all(t.meta["fine_print_box"][1] >= _image_size(t)[1] // 2 - 8 for t in train_tiny)
    train_rot, held_rot = _by_variant(tasks, "rotated_text")
    assert all(125 <= t.meta["angle"] <= 235 and t.meta["angle"] != 180 for t in held_rot)
    assert all(not 120 < t.meta["angle"] < 240 or t.meta["angle"] == 180 for t in train_rot)


def test_split_returns_exactly_the_held_out_variants(tasks):
    train, held = split(tasks, HOLDOUT_FRACTION, seed=5)
    assert {t.variant for t in train} == {"train"} and {t.variant for t in held} == {"holdout"}
    assert len(train) + len(held) == N
    assert {t.category for t in held} == set(CATEGORIES) == {t.category for t in train}
    assert [t.id for t in train + held] == [t.id for t in tasks if t.variant == "train"] + [
        t.id for t in tasks if t.variant == "holdout"
    ]


def test_split_is_deterministic_and_decided_before_generation(tmp_path, tasks):
    again = load_suite(generate_suite(tmp_path / "again", n=N, seed=5))
    first, second = split(tasks, HOLDOUT_FRACTION, seed=5), split(again, HOLDOUT_FRACTION, seed=5)
    assert [[t.id for t in part] for part in first] == [[t.id for t in part] for part in second]
    assert split(tasks, HOLDOUT_FRACTION, seed=99) == first  # the suite decided; the seed is not used
    categories = [CATEGORIES[i % len(CATEGORIES)] for i in range(N)]
    held_ids = {t.id for t in first[1]}
    assert {int(t.id.rsplit("-", 1)[1]) for t in tasks if t.id in held_ids} == holdout_indices(
        categories, HOLDOUT_FRACTION, 5
    )
    other = load_suite(generate_suite(tmp_path / "other", n=N, seed=6))
    assert {t.id.rsplit("-", 1)[1] for t in split(other, HOLDOUT_FRACTION, seed=6)[1]} != {
        t.id.rsplit("-", 1)[1] for t in first[1]
    }


def test_the_suite_rule_is_the_split_rule_for_tasks_without_variants():
    """Tasks that carry no variant (hand-made, older suites) are split by the rule the suite uses."""
    categories = [CATEGORIES[i % len(CATEGORIES)] for i in range(48)]
    plain = [SimpleNamespace(id=str(i), category=c) for i, c in enumerate(categories)]
    _, held = split(plain, 0.25, seed=3)  # type: ignore[arg-type]
    assert {int(t.id) for t in held} == holdout_indices(categories, 0.25, 3)
    assert split(plain, 0.25, seed=3) == split(plain, 0.25, seed=3)  # type: ignore[arg-type]


def test_a_fraction_the_suite_was_not_generated_with_is_refused(tmp_path, tasks):
    with pytest.raises(SuiteError, match=r"generate the suite with holdout_fraction=0.5"):
        split(tasks, 0.5)
    assert split(tasks, 0.0) == (list(tasks), [])  # nothing held out: every task may train
    halves = load_suite(generate_suite(tmp_path / "h", n=24, seed=5, holdout_fraction=0.5))
    train, held = split(halves, 0.5)
    assert len(held) == len(train) == 12 and {t.variant for t in held} == {"holdout"}
    with pytest.raises(SuiteError, match="holdout_fraction"):
        generate_suite(tmp_path / "bad", n=6, seed=0, holdout_fraction=1.0)


def test_every_held_out_variant_checks_its_reference_answer():
    for category in CATEGORIES:
        for seed in range(3):
            for difficulty in (1, 2, 3):
                task, _ = generate_task(category, difficulty, seed, "t", "holdout")
                assert task.variant == "holdout" and task.check(task.answer.display()), (category, seed)
                assert not task.check("I do not know")


@pytest.fixture(scope="module")
def toolbox() -> Toolbox:
    return Toolbox(reference_tools(), default_timeout_s=120.0)


HOLDOUT_SEEDS = {1: 101, 2: 102, 3: 103}
"""One seed per difficulty: three held-out tasks per category (easyocr on a CPU takes ~20 s a task)."""


@pytest.mark.slow
@pytest.mark.parametrize("category", CATEGORIES)
def test_held_out_references_solve_their_tasks_with_the_real_tools(category, toolbox, tmp_path):
    """Real easyocr, detector and search: each held-out variant's reference holds, ``derived_from`` too."""
    if category == "count" and not DEFAULT_CHECKPOINT.is_file():
        pytest.fail(f"the shipped detector checkpoint {DEFAULT_CHECKPOINT} is missing")
    failures = []
    for difficulty, seed in HOLDOUT_SEEDS.items():
        task, images = generate_task(category, difficulty, seed, f"{category}-{seed}-{difficulty}", "holdout")
        paths = []
        for k, image in enumerate(images):
            Image.fromarray(image).save(tmp_path / f"{task.id}-{k}.png")
            paths.append(str(tmp_path / f"{task.id}-{k}.png"))
        task = Task(**{**{f: getattr(task, f) for f in task.__struct_fields__}, "images": paths})
        run = run_reference(task, toolbox)  # checks derived_from before every step
        if not run.ok:
            failures.append(f"{task.id}: {run.reason}")
    assert not failures, "\n".join(failures)
