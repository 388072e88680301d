"""The built-in task suite: generate it to disk, load it back, cache it, split it.

A suite is a directory (format in ``docs/task_suite.md``)::

    suite.json     header: format, version, generator_version, seed, n, categories
    tasks.jsonl    one Task per line (msgspec JSON), image paths relative to the directory
    images/*.png   the task images

Decisions:

* Task ``i`` of a suite has category ``categories[i % k]`` and difficulty ``1 + (i // k) % 3``, so
  every category appears and every difficulty of it once ``n >= 3k``. Its random generator is seeded
  from ``SeedSequence([seed, i])``, so one task's pixels never depend on another's.
* The train / held-out split is decided *before* generation: per category, a seeded
  ``holdout_fraction`` of the task indices (:func:`holdout_indices`) is generated from the
  category's held-out variant (phrasings, fonts, a layout or value range no training task uses), the
  rest from its training variant. :func:`split` then partitions on ``Task.variant``, so held-out
  success measures the skill, not memorised templates. Task lists without held-out variants (older
  suites, hand-made tasks) are split by the same seeded per-category sample, as before.
* Writing is atomic: everything goes to a temporary sibling directory, which is renamed into place
  last. A crash leaves a ``.tmp-*`` directory that :func:`load_suite` never reads, never a half suite.
* The same ``(n, seed, categories)`` gives byte-identical files (PNG holds no timestamps; JSON keys
  keep their order); ``GENERATOR_VERSION`` is bumped whenever a generator's output changes, and is
  part of the :func:`builtin_suite` cache key.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import msgspec
import numpy as np
from PIL import Image

from regrpo.errors import InputError
from regrpo.paths import default_cache_dir
from regrpo.tasks.categories import count, expression, lookup, receipt, rotated_text, tiny_text
from regrpo.tasks.draft import Generator
from regrpo.tasks.schema import Task, Variant

__all__ = [
    "CATEGORIES",
    "GENERATORS",
    "GENERATOR_VERSION",
    "HOLDOUT_FRACTION",
    "SUITE_FORMAT",
    "SuiteError",
    "builtin_suite",
    "generate_suite",
    "generate_task",
    "holdout_indices",
    "load_suite",
    "split",
]

SUITE_FORMAT = "regrpo-task-suite"
SUITE_VERSION = 1
"""Version of the on-disk layout (``suite.json``, ``tasks.jsonl``)."""
GENERATOR_VERSION = 4
"""Bump when any generator's output for a given seed changes."""
HOLDOUT_FRACTION = 0.25
"""Share of each category generated from its held-out variant unless told otherwise (the CLI's default)."""

GENERATORS: dict[str, Generator] = {
    "receipt": receipt.generate,
    "count": count.generate,
    "tiny_text": tiny_text.generate,
    "rotated_text": rotated_text.generate,
    "expression": expression.generate,
    "lookup": lookup.generate,
}
CATEGORIES: tuple[str, ...] = tuple(GENERATORS)


class SuiteError(InputError):
    """A task suite cannot be generated or loaded (bad arguments, a missing or corrupt file)."""


def _check_categories(categories: Sequence[str] | None) -> tuple[str, ...]:
    chosen = tuple(CATEGORIES if categories is None else categories)
    unknown = [c for c in chosen if c not in GENERATORS]
    if not chosen or unknown:
        raise SuiteError(
            f"unknown task categories {unknown or '(none given)'}; choose from {', '.join(CATEGORIES)}"
        )
    if len(set(chosen)) != len(chosen):
        raise SuiteError(f"categories must not repeat, got {list(chosen)}")
    return chosen


def task_seed(seed: int, index: int) -> int:
    """The seed of task ``index`` in a suite generated with ``seed``."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint64)[0] >> 1)


def _check_fraction(holdout_fraction: float) -> None:
    if not 0.0 <= holdout_fraction < 1.0:
        raise SuiteError(f"holdout_fraction must be in [0, 1), got {holdout_fraction}")


def _holdout_count(members: int, holdout_fraction: float) -> int:
    """How many of a category's ``members`` tasks are held out: at least one, never all, when two or more."""
    k = round(holdout_fraction * members)
    if holdout_fraction > 0 and members >= 2:
        k = min(max(k, 1), members - 1)
    return k


def holdout_indices(categories: Sequence[str], holdout_fraction: float, seed: int) -> set[int]:
    """Positions in ``categories`` (task ``i``'s category) held out: a seeded share of each category.

    The rule :func:`split` applies to tasks without held-out variants; the suite applies it to task
    indices before generating, so each held-out task is generated from its held-out variant.
    """
    _check_fraction(holdout_fraction)
    rng = random.Random(seed)
    held: set[int] = set()
    for category in sorted(set(categories)):
        members = [i for i, c in enumerate(categories) if c == category]
        held.update(rng.sample(members, _holdout_count(len(members), holdout_fraction)))
    return held


def generate_task(
    category: str, difficulty: int, seed: int, task_id: str, variant: Variant = "train"
) -> tuple[Task, list[np.ndarray]]:
    """One task (image paths still empty) and its images: a category, difficulty, seed and variant."""
    if category not in GENERATORS:
        raise SuiteError(f"unknown task category {category!r}; choose from {', '.join(CATEGORIES)}")
    if difficulty not in (1, 2, 3):
        raise SuiteError(f"difficulty must be 1, 2 or 3, got {difficulty}")
    if variant not in ("train", "holdout"):
        raise SuiteError(f"variant must be 'train' or 'holdout', got {variant!r}")
    draft = GENERATORS[category](np.random.default_rng(seed), difficulty, variant)
    task = Task(
        id=task_id, category=category, difficulty=difficulty, question=draft.question, images=[],
        answer=draft.answer, reference=draft.reference, seed=seed, meta=draft.meta, variant=variant,
    )  # fmt: skip
    return task, draft.images


def _write(directory: Path, n: int, seed: int, categories: tuple[str, ...], holdout_fraction: float) -> None:
    (directory / "images").mkdir()
    lines = []
    held = holdout_indices([categories[i % len(categories)] for i in range(n)], holdout_fraction, seed)
    for index in range(n):
        category = categories[index % len(categories)]
        difficulty = 1 + (index // len(categories)) % 3
        task_id = f"{category}-{seed}-{index:04d}"
        variant: Variant = "holdout" if index in held else "train"
        task, images = generate_task(category, difficulty, task_seed(seed, index), task_id, variant)
        paths = []
        for k, image in enumerate(images):
            relative = f"images/{task_id}-{k}.png"
            Image.fromarray(image).save(directory / relative, format="PNG", optimize=False)
            paths.append(relative)
        lines.append(msgspec.json.encode(msgspec.structs.replace(task, images=paths)))
    (directory / "tasks.jsonl").write_bytes(b"".join(line + b"\n" for line in lines))
    header = {
        "format": SUITE_FORMAT, "version": SUITE_VERSION, "generator_version": GENERATOR_VERSION,
        "seed": seed, "n": n, "categories": list(categories), "holdout_fraction": holdout_fraction,
    }  # fmt: skip
    # The header goes last: a directory without it is never loaded as a suite.
    (directory / "suite.json").write_text(json.dumps(header, indent=2) + "\n", encoding="utf-8")


def generate_suite(
    out_dir: str | Path,
    *,
    n: int,
    seed: int,
    categories: Sequence[str] | None = None,
    holdout_fraction: float = HOLDOUT_FRACTION,
) -> Path:
    """Generate ``n`` tasks into ``out_dir`` (which must not exist or be empty) and return its path.

    ``holdout_fraction`` of each category (:func:`holdout_indices`) is generated from its held-out
    variant; pass the same fraction to :func:`split`. Raises :class:`SuiteError` for a bad ``n``,
    fraction or category, or an ``out_dir`` that holds files.
    """
    if not isinstance(n, int) or n < 1:
        raise SuiteError(f"n must be a positive integer, got {n!r}")
    _check_fraction(holdout_fraction)
    chosen = _check_categories(categories)
    target = Path(out_dir).expanduser().resolve()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise SuiteError(
            f"{target} already exists and is not an empty directory; remove it or pick another path"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    try:
        _write(staging, n, seed, chosen, holdout_fraction)
        if target.exists():
            target.rmdir()  # empty, checked above
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def load_suite(path: str | Path) -> list[Task]:
    """Read a suite directory; task image paths come back absolute.

    Raises :class:`SuiteError` naming the problem: a missing directory or file, a header of another
    format, a line that is not a valid task (with its line number), a missing image.
    """
    directory = Path(path).expanduser().resolve()
    if not directory.is_dir():
        raise SuiteError(f"task suite directory not found: {directory}; create one with generate_suite()")
    header_path, tasks_path = directory / "suite.json", directory / "tasks.jsonl"
    for required in (header_path, tasks_path):
        if not required.is_file():
            raise SuiteError(f"{directory} is not a complete task suite: {required.name} is missing")
    try:
        header = json.loads(header_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SuiteError(f"{header_path} is not valid JSON: {exc}") from exc
    if not isinstance(header, dict) or header.get("format") != SUITE_FORMAT:
        raise SuiteError(f"{header_path} is not a {SUITE_FORMAT} header")
    if header.get("version") != SUITE_VERSION:
        raise SuiteError(
            f"{directory} has suite format version {header.get('version')}; this regrpo reads {SUITE_VERSION}"
        )
    tasks = []
    decoder = msgspec.json.Decoder(Task)
    for number, line in enumerate(tasks_path.read_bytes().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            task = decoder.decode(line)
        except msgspec.DecodeError as exc:
            raise SuiteError(f"{tasks_path}, line {number}: not a valid task: {exc}") from exc
        if task.difficulty not in (1, 2, 3):
            raise SuiteError(f"{tasks_path}, line {number}: difficulty must be 1-3, got {task.difficulty}")
        images = []
        for relative in task.images:
            image = (directory / relative).resolve()
            if not image.is_file():
                raise SuiteError(
                    f"{tasks_path}, line {number}: image {relative!r} of task {task.id} is missing"
                )
            images.append(str(image))
        tasks.append(msgspec.structs.replace(task, images=images))
    return tasks


def builtin_suite(
    n: int = 24,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    holdout_fraction: float = HOLDOUT_FRACTION,
) -> list[Task]:
    """The built-in suite with all categories, generated once under the cache and reused.

    ``split(tasks, holdout_fraction)`` with the same fraction returns its held-out variants.
    """
    _check_fraction(holdout_fraction)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "suites"
    directory = root / f"builtin-g{GENERATOR_VERSION}-n{n}-s{seed}-h{holdout_fraction:g}"
    if not (directory / "suite.json").is_file():
        try:
            generate_suite(directory, n=n, seed=seed, holdout_fraction=holdout_fraction)
        except (SuiteError, OSError):
            if not (directory / "suite.json").is_file():  # not a concurrent writer that won the race
                raise
    return load_suite(directory)


def split(tasks: Sequence[Task], holdout_fraction: float, seed: int = 0) -> tuple[list[Task], list[Task]]:
    """``(train, held_out)``: per category, ``holdout_fraction`` of the tasks is held out.

    A suite's tasks were generated for one side already (``Task.variant``): the held-out part is
    exactly its ``"holdout"`` tasks, which use phrasings, fonts and layouts or value ranges the train
    part never does, and ``seed`` is not used. Raises :class:`SuiteError` when the fraction asks for
    another number of a category's tasks than were generated held out (generate the suite with that
    ``holdout_fraction``). A category without held-out variants (an older suite, hand-made tasks) is
    split by a seeded sample, as :func:`holdout_indices` draws. Stratified so every category is in
    both parts when it has at least two tasks and the fraction is above 0; ``holdout_fraction`` 0
    keeps every task for training. The order within each part follows ``tasks``.
    """
    _check_fraction(holdout_fraction)
    rng = random.Random(seed)
    held: set[str] = set()
    by_category: dict[str, list[Task]] = {}
    for task in tasks:
        by_category.setdefault(task.category, []).append(task)
    for category in sorted(by_category):
        members = by_category[category]
        k = _holdout_count(len(members), holdout_fraction)
        # getattr: callers may split any objects with an id and a category
        variants = [t.id for t in members if getattr(t, "variant", "train") == "holdout"]
        if not variants:
            held.update(t.id for t in rng.sample(members, k))
        elif holdout_fraction > 0 and len(variants) != k:
            raise SuiteError(
                f"holdout_fraction {holdout_fraction} asks for {k} of the {len(members)} {category} "
                f"tasks, but {len(variants)} were generated held out; generate the suite with "
                f"holdout_fraction={holdout_fraction} (builtin_suite / generate_suite take it)"
            )
        elif holdout_fraction > 0:
            held.update(variants)
    return [t for t in tasks if t.id not in held], [t for t in tasks if t.id in held]
