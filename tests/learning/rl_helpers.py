"""A real failure branch point for the RL tests: the calculator misspelled, its fix the calculator call."""

from __future__ import annotations

import asyncio

from regrpo.agent.prompts import render_system_prompt
from regrpo.learning.records import BranchPoint
from regrpo.learning.replay import observation_of
from regrpo.tools import Toolbox, ToolContext, default_tools
from regrpo.tools.images import ImageStore
from regrpo.traces.schema import Message, ToolCall

CALCULATOR = [t for t in default_tools() if t.name == "calculator"]
SYSTEM = render_system_prompt(CALCULATOR)
TARGET = '<tool_call>{"name": "calculator", "arguments": {"expression": "17 * 23"}}</tool_call>'


def calculator_point() -> BranchPoint:
    """A real failure branch point: a misspelled tool name, whose fix is the calculator call."""
    bad = ToolCall("calculater", {"expression": "17 * 23"})
    outcome = asyncio.run(Toolbox(CALCULATOR).call(bad.name, bad.arguments, ToolContext(images=ImageStore())))
    observation = observation_of(outcome)
    return BranchPoint(
        id="p1",
        task_id="t",
        messages=[
            Message("system", SYSTEM),
            Message("user", "What is 17 * 23?"),
            Message("assistant", TARGET.replace("calculator", "calculater")),
            Message("user", observation.content),
        ],
        images=[],
        replay=[],
        failed=True,
        error_type=observation.error_type,
        observation=observation.content,
        failed_action=bad,
        target=ToolCall("calculator", {"expression": "17 * 23"}),
        expects=["391"],
    )
