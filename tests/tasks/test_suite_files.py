"""Suite generation and loading: determinism, schema round trip, variety, atomic writes, load errors."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import numpy as np
import pytest
from PIL import Image

from regrpo.errors import InputError
from regrpo.tasks.schema import AnswerSpec, ReferenceStep, Task
from regrpo.tasks.suite import (
    CATEGORIES,
    SuiteError,
    builtin_suite,
    generate_suite,
    load_suite,
    split,
)

N = 36  # two tasks of each category at each difficulty


@pytest.fixture(scope="module")
def suite_dir(tmp_path_factory) -> Path:
    return generate_suite(tmp_path_factory.mktemp("suite") / "s", n=N, seed=11)


@pytest.fixture(scope="module")
def tasks(suite_dir) -> list[Task]:
    return load_suite(suite_dir)


def _files(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()
    }


def test_the_same_seed_gives_identical_bytes(tmp_path, suite_dir):
    again = generate_suite(tmp_path / "again", n=N, seed=11)
    assert _files(again) == _files(suite_dir)


def test_another_seed_gives_other_tasks(tmp_path, tasks):
    other = load_suite(generate_suite(tmp_path / "other", n=12, seed=12))
    assert [t.question for t in other] != [t.question for t in tasks[:12]]
    assert Image.open(other[0].images[0]).tobytes() != Image.open(tasks[0].images[0]).tobytes()


def test_header_describes_the_suite(suite_dir):
    header = json.loads((suite_dir / "suite.json").read_text())
    assert header["seed"] == 11 and header["n"] == N
    assert header["categories"] == list(CATEGORIES)
    assert {"format", "version", "generator_version"} <= header.keys()


def test_every_category_and_difficulty_is_present(tasks):
    assert len(tasks) == N
    assert {(t.category, t.difficulty) for t in tasks} == {(c, d) for c in CATEGORIES for d in (1, 2, 3)}
    assert len({t.id for t in tasks}) == N


def test_loaded_images_are_absolute_and_readable(tasks):
    for task in tasks:
        for path in task.images:
            assert Path(path).is_absolute()
            with Image.open(path) as image:
                assert image.mode == "RGB" and min(image.size) >= 64


def test_references_use_tools_and_image_ids(tasks):
    for task in tasks:
        assert task.reference, task.id
        tools = [step.tool for step in task.reference]
        assert set(tools) <= {"ocr", "calculator", "crop", "resize", "rotate", "count", "search"}
        for step in task.reference:
            if "image" in step.arguments:
                assert step.arguments["image"].startswith("img_")


def test_reference_expects_name_every_value_the_calculator_uses(tasks):
    """The answer must come from tool outputs, not be baked into the calculator expression."""
    for task in tasks:
        steps = task.reference
        if steps[-1].tool != "calculator" or task.category == "count":
            continue
        numbers = [
            tok for tok in _numbers(steps[-1].arguments["expression"]) if tok not in {"2", "100", "1000", "1"}
        ]
        read = " ".join(want for step in steps[:-1] for want in step.expects)
        year_in_question = [n for n in numbers if n in task.question]
        missing = [n for n in numbers if n not in read and n not in year_in_question]
        assert not missing, (task.id, steps[-1].arguments, read)


def _numbers(expression: str) -> list[str]:
    import re

    return re.findall(r"\d+(?:\.\d+)?", expression)


def test_reference_answers_check_as_right(tasks):
    for task in tasks:
        assert task.check(task.answer.display()), task.id
        assert not task.check("I do not know"), task.id
        assert not task.check(None)


def test_generators_vary_fonts_backgrounds_and_phrasings(tasks):
    for category in CATEGORIES:
        sample = [t for t in tasks if t.category == category]
        assert len({t.question for t in sample}) >= 3, category
        assert len({t.meta.get("template") for t in sample}) >= 2, category
        if category != "count":
            assert len({t.meta["font"] for t in sample}) >= 3, category
            assert len({t.meta["background"] for t in sample}) >= 2, category


def test_task_round_trips_through_json():
    task = Task(
        id="t", category="receipt", difficulty=2, question="q?", images=["images/a.png"],
        answer=AnswerSpec("number", 4.5, tolerance=0.01),
        reference=[ReferenceStep("ocr", {"image": "img_0"}, ["4.50"]),
                   ReferenceStep("calculator", {"expression": "4.5"})],
        seed=3, meta={"font": "DejaVuSans.ttf", "text": ["a", "b"]},
    )  # fmt: skip
    assert msgspec.json.decode(msgspec.json.encode(task), type=Task) == task
    assert task.check("it costs $4.50") and not task.check("4.6")


def test_split_is_stratified_and_disjoint(tasks):
    train, held = split(tasks, 0.25, seed=1)
    assert {t.id for t in train}.isdisjoint({t.id for t in held})
    assert len(train) + len(held) == len(tasks)
    assert {t.category for t in held} == set(CATEGORIES) == {t.category for t in train}
    assert split(tasks, 0.25, seed=1) == (train, held)
    assert split(tasks, 0.0) == (list(tasks), [])
    with pytest.raises(SuiteError, match="holdout_fraction"):
        split(tasks, 1.0)


def test_builtin_suite_is_generated_once_and_reused(tmp_path):
    first = builtin_suite(n=6, seed=3, cache_dir=tmp_path)
    (directory,) = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
    stamp = (directory / "tasks.jsonl").stat().st_mtime_ns
    second = builtin_suite(n=6, seed=3, cache_dir=tmp_path)
    assert first == second and (directory / "tasks.jsonl").stat().st_mtime_ns == stamp
    assert sorted(t.category for t in first) == sorted(CATEGORIES)


def test_generate_refuses_bad_arguments_and_a_full_directory(tmp_path, suite_dir):
    with pytest.raises(SuiteError, match="unknown task categories"):
        generate_suite(tmp_path / "x", n=2, seed=0, categories=["receipt", "poetry"])
    with pytest.raises(SuiteError, match="positive integer"):
        generate_suite(tmp_path / "x", n=0, seed=0)
    with pytest.raises(SuiteError, match="not an empty directory"):
        generate_suite(suite_dir, n=2, seed=0)
    assert issubclass(SuiteError, InputError)


def test_a_crash_mid_write_leaves_nothing_loadable(tmp_path, monkeypatch):
    import regrpo.tasks.suite as suite_module

    def crash(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(suite_module.Image, "fromarray", crash)
    with pytest.raises(RuntimeError, match="disk on fire"):
        generate_suite(tmp_path / "s", n=3, seed=0)
    assert not (tmp_path / "s").exists()
    assert list(tmp_path.iterdir()) == []  # the staging directory was removed too
    with pytest.raises(SuiteError, match="not found"):
        load_suite(tmp_path / "s")


def test_chosen_categories_only(tmp_path):
    tasks = load_suite(generate_suite(tmp_path / "s", n=4, seed=0, categories=["expression", "rotated_text"]))
    assert [t.category for t in tasks] == ["expression", "rotated_text"] * 2


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_load_errors_say_what_is_wrong(tmp_path, suite_dir):
    with pytest.raises(SuiteError, match="not found"):
        load_suite(tmp_path / "missing")
    broken = _copy(suite_dir, tmp_path / "bad-line")
    lines = (broken / "tasks.jsonl").read_text().splitlines()
    lines[2] = lines[2].replace('"difficulty":', '"difficulty_":')
    (broken / "tasks.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(SuiteError, match=r"line 3"):
        load_suite(broken)
    no_image = _copy(suite_dir, tmp_path / "no-image")
    next((no_image / "images").iterdir()).unlink()
    with pytest.raises(SuiteError, match="is missing"):
        load_suite(no_image)
    headless = _copy(suite_dir, tmp_path / "headless")
    (headless / "suite.json").unlink()
    with pytest.raises(SuiteError, match="suite.json is missing"):
        load_suite(headless)


def test_generated_images_are_uint8_rgb(tasks):
    array = np.asarray(Image.open(tasks[0].images[0]))
    assert array.dtype == np.uint8 and array.ndim == 3 and array.shape[2] == 3
