"""What the model is shown: a system prompt with nothing to copy, and after a failed call the message,
never the error type it must diagnose."""

from __future__ import annotations

import re

from regrpo.agent.prompts import observation_text, reflection_request, render_system_prompt
from regrpo.errors import ErrorType
from regrpo.tools import default_tools
from regrpo.traces.schema import Observation, ToolCall


def test_a_failure_observation_does_not_name_its_error_type():
    """Issue 11 (6): 'Error (ArgInvalid): ...' handed the diagnosis reward to a model that copies it."""
    failed = Observation(
        ok=False,
        content="",
        error_type=ErrorType.ARG_INVALID,
        error_message="cannot parse expression '17*/23'",
    )
    shown = observation_text(failed)
    assert "cannot parse expression '17*/23'" in shown
    request = reflection_request("tool_error", ToolCall("calculator", {"expression": "17*/23"}), failed, [])
    for text in (shown, request.split("Reflect first")[0]):
        assert "ArgInvalid" not in text and "ARG_INVALID" not in text


def test_the_system_prompt_shows_the_format_but_no_concrete_action_to_copy():
    """A warm start copied the old worked example's ``12 * 7 + 1`` into held-out tasks' calls."""
    prompt = render_system_prompt(default_tools())
    calls = re.findall(r"<tool_call>(.*?)</tool_call>", prompt)
    answers = re.findall(r"<answer>(.*?)</answer>", prompt)
    assert calls == ['{"name": "<tool name>", "arguments": {<arguments>}}'] and answers == ["the answer"]
    assert not re.search(r"\d+\s*[-+*/]\s*\d+", prompt), "an arithmetic expression a model could copy"
