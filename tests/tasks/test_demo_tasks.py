"""The demo tasks: deterministic from a seed, and their reference answers really follow from the tools."""

from __future__ import annotations

import asyncio
import re

import pytest

from regrpo.tasks import demo_tasks
from regrpo.tools import ImageStore, Toolbox, ToolContext, default_tools


def test_same_seed_same_tasks_and_kinds_alternate():
    first, second = demo_tasks(6, seed=3), demo_tasks(6, seed=3)
    assert [t.question for t in first] == [t.question for t in second]
    assert [t.question for t in demo_tasks(6, seed=4)] != [t.question for t in first]
    assert [t.category == "arithmetic" for t in first] == [True, False] * 3


def test_arithmetic_answers_match_the_calculator():
    toolbox = Toolbox(default_tools())
    for task in demo_tasks(20, seed=1)[::2]:
        expression = re.search(r"[\d(][\d\s+*()-]*[\d)]", task.question).group(0)
        outcome = asyncio.run(
            toolbox.call("calculator", {"expression": expression}, ToolContext(ImageStore()))
        )
        assert str(outcome.output) == task.answer, task.question


def test_image_answers_match_what_the_image_tools_report():
    toolbox = Toolbox(default_tools())
    for task in demo_tasks(30, seed=2)[1::2]:
        images = ImageStore()
        images.add(task.images[0])
        kind = task.category.removeprefix("image_")
        if kind == "rotate":
            call, key = {"image": "img_0", "angle": 90}, "width"
        elif kind == "crop":
            box = [int(v) for v in task.question.split("[")[1].split("]")[0].split(",")]
            call, key = {"image": "img_0", "box": box}, "height"
        else:
            call, key = {"image": "img_0", "scale": 2}, "width"
        outcome = asyncio.run(toolbox.call(kind, call, ToolContext(images)))
        assert outcome.ok and str(outcome.output[key]) == task.answer, task.question


def test_bad_count():
    with pytest.raises(ValueError):
        demo_tasks(0)
