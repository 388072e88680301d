"""Shared, built-once inputs for the data-engine tests: a 6-task suite, the real toolbox, one dataset.

Built once per test process (``functools.cache``) because the real OCR costs about a second a call
on the 2-core CPU; every test only reads them.
"""

from __future__ import annotations

import functools

from regrpo.learning.data_engine import Dataset, build_dataset
from regrpo.tasks.schema import Task
from regrpo.tasks.suite import builtin_suite
from regrpo.tools import Toolbox, default_tools


@functools.cache
def suite() -> tuple[Task, ...]:
    """One task of each category (receipt, count, tiny_text, rotated_text, expression, lookup)."""
    return tuple(builtin_suite(6))


def task(category: str) -> Task:
    return next(t for t in suite() if t.category == category)


@functools.cache
def toolbox() -> Toolbox:
    return Toolbox(default_tools())


@functools.cache
def dataset() -> Dataset:
    return build_dataset(list(suite()), toolbox=toolbox(), near_misses_per_step=2, seed=0, progress=False)
