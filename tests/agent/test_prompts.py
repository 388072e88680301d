"""What the model is shown after a failed call: the message, never the error type it must diagnose."""

from __future__ import annotations

from regrpo.agent.prompts import observation_text, reflection_request
from regrpo.errors import ErrorType
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
