"""Every text the runtime shows the model: the system prompt, the task, observations, reflection requests.

Kept in one module so the prompt the agent runs with and the prompts the learning module trains on
come from the same functions. Tool descriptions are each tool's JSON Schema, compacted.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from regrpo.errors import ErrorType
from regrpo.tools import ImageInfo, Tool
from regrpo.traces.schema import Action, Observation, ToolCall

__all__ = [
    "observation_text",
    "reflection_request",
    "render_system_prompt",
    "render_task",
]

_ERROR_TYPES = ", ".join(e.value for e in ErrorType)

_FORMAT = """Each turn, reply with exactly one action:
<tool_call>{"name": "<tool name>", "arguments": {<arguments>}}</tool_call>
or, when you know the final answer:
<answer>the answer</answer>
Images are given by id (img_0, img_1, ...); tools that make images return a new id.

Example:
user: What is 12 * 7 + 1?
assistant: <tool_call>{"name": "calculator", "arguments": {"expression": "12 * 7 + 1"}}</tool_call>
user: <tool_response>85</tool_response>
assistant: <answer>85</answer>"""


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def render_system_prompt(tools: Sequence[Tool], instructions: str | None = None) -> str:
    """The system prompt: role, the tools with their JSON Schemas, the action format, an example."""
    lines = ["You are an agent that solves tasks step by step by calling tools.", "", "Tools:", "<tools>"]
    for tool in tools:
        spec = {"name": tool.name, "description": tool.description, "parameters": tool.parameters_schema()}
        lines.append(_compact(spec))
    lines += ["</tools>", "", _FORMAT]
    if instructions:
        lines += ["", instructions.strip()]
    return "\n".join(lines)


def describe_images(images: Sequence[ImageInfo]) -> str:
    return ", ".join(f"{i.image_id} ({i.width}x{i.height})" for i in images)


def render_task(task: str, images: Sequence[ImageInfo]) -> str:
    """The first user message: the task, then the ids and sizes of its images."""
    return f"{task}\nImages: {describe_images(images)}" if images else task


def observation_text(observation: Observation) -> str:
    """What the model is shown after an action ran (or failed to parse)."""
    if observation.error_type is ErrorType.UNPARSEABLE_ACTION:
        return f"Your reply could not be used: {observation.error_message}"
    if not observation.ok:
        return f"<tool_response>Error ({observation.error_type}): {observation.error_message}</tool_response>"
    output = observation.output if isinstance(observation.output, str) else _compact(observation.output)
    return f"<tool_response>{output}</tool_response>"


def reflection_request(
    reason: str, action: Action, observation: Observation, images: Sequence[ImageInfo],
    *, confidence: float | None = None, running_mean: float | None = None,
) -> str:
    """The grounded evidence and the instruction to reflect, appended after an observation."""
    what = {
        "tool_error": "That action failed.",
        "empty_observation": "That action returned nothing.",
        "low_confidence": (
            f"That action ran, but you were unsure of it (confidence {confidence:.2f} below this "
            f"episode's mean {running_mean:.2f})." if confidence is not None and running_mean is not None
            else "That action ran, but you were unsure of it."
        ),
    }[reason]
    evidence = []
    if observation.error_type is not None:
        evidence.append(f"- error: {observation.error_type}: {observation.error_message}")
    if isinstance(action, ToolCall):
        evidence.append(f"- action: {_compact({'name': action.name, 'arguments': action.arguments})}")
    if observation.ok:
        evidence.append(f"- output: {_compact(observation.output)}")
    if images:
        evidence.append(f"- images: {describe_images(images)}")
    return (
        f"{what} Evidence:\n" + "\n".join(evidence) + "\n"
        "Reflect first: write <reflection>{\"error_type\": \"<one of " + _ERROR_TYPES + ">\", "
        "\"evidence\": \"<quote the observation>\", \"fix_plan\": \"<what to change>\"}</reflection> "
        "then exactly one corrected <tool_call> or <answer>."
    )
