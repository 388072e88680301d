"""Every text the runtime shows the model: the system prompt, the task, observations, reflection requests.

Kept in one module so the prompt the agent runs with and the prompts the learning module trains on
come from the same functions.

Tools are shown as one signature line each, derived from their JSON Schema
(``crop(image: string, box: [integer x4])``), not as the raw schema: on the 2-core CPU the raw
schemas of the ten built-in tools made a 1,525-token system prompt whose prefill alone took 6.5 s per
step with SmolLM2-135M, and a small model follows a short, regular listing no worse. The full schema
stays available as ``Tool.parameters_schema()`` (the HTTP API hands it to OpenAI-style clients).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from regrpo.errors import ErrorType
from regrpo.tools import ImageInfo, Tool
from regrpo.traces.schema import Action, Observation, ToolCall

__all__ = [
    "describe_images",
    "observation_text",
    "reflection_request",
    "render_system_prompt",
    "render_task",
    "tool_signature",
]

_ERROR_TYPES = ", ".join(e.value for e in ErrorType)

_FORMAT = """Each turn, reply with exactly one action:
<tool_call>{"name": "<tool name>", "arguments": {<arguments>}}</tool_call>
or, when you know the final answer:
<answer>the answer</answer>
Images are given by id (img_0, img_1, ...); tools that make images return a new id."""
# No worked example: a warm-started SmolLM2 copied the old one's expression (``12 * 7 + 1``) into
# held-out tasks' calculator calls, and the base model follows the format almost never either way
# (docs/results.md). The format is taught by the warm start's data, whose every context holds this prompt.


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _schema_type(schema: dict[str, Any]) -> str:
    """A short type for one JSON Schema property: ``string``, ``[integer x4]``, ``"a"|"b"``, ..."""
    if "enum" in schema:
        return "|".join(_compact(v) for v in schema["enum"])
    if "anyOf" in schema:
        return "|".join(_schema_type(s) for s in schema["anyOf"])
    kind = schema.get("type", "any")
    if kind == "array":
        item = _schema_type(schema.get("items", {}))
        size = schema.get("minItems")
        return (
            f"[{item} x{size}]" if size is not None and size == schema.get("maxItems") else f"[{item}, ...]"
        )
    return str(kind)


def tool_signature(tool: Tool) -> str:
    """``name(arg: type, opt: type = default): description``, from the tool's JSON Schema."""
    schema = tool.parameters_schema()
    required = set(schema.get("required", []))
    params = []
    for name, prop in schema.get("properties", {}).items():
        default = "" if name in required else f" = {_compact(prop.get('default'))}"
        params.append(f"{name}: {_schema_type(prop)}{default}")
    return f"{tool.name}({', '.join(params)}): {tool.description}"


def render_system_prompt(tools: Sequence[Tool], instructions: str | None = None) -> str:
    """The system prompt: role, one signature line per tool, the action format."""
    lines = ["You are an agent that solves tasks step by step by calling tools.", "", "Tools:"]
    lines += [f"- {tool_signature(tool)}" for tool in tools]
    lines += ["", _FORMAT]
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
        # the message only, never the error type: naming it would hand the model the diagnosis that
        # ReGRPO rewards (it must be read off the message, as a reflection's evidence must quote it)
        return f"<tool_response>Error: {observation.error_message}</tool_response>"
    output = observation.output if isinstance(observation.output, str) else _compact(observation.output)
    return f"<tool_response>{output}</tool_response>"


def reflection_request(
    reason: str,
    action: Action,
    observation: Observation,
    images: Sequence[ImageInfo],
    *,
    confidence: float | None = None,
    running_mean: float | None = None,
) -> str:
    """The grounded evidence and the instruction to reflect, appended after an observation."""
    what = {
        "tool_error": "That action failed.",
        "empty_observation": "That action returned nothing.",
        "low_confidence": (
            f"That action ran, but you were unsure of it (confidence {confidence:.2f} below this "
            f"episode's mean {running_mean:.2f})."
            if confidence is not None and running_mean is not None
            else "That action ran, but you were unsure of it."
        ),
    }[reason]
    evidence = []
    if observation.error_type is not None:
        evidence.append(f"- error: {observation.error_message}")  # no type: see observation_text
    if isinstance(action, ToolCall):
        evidence.append(f"- action: {_compact({'name': action.name, 'arguments': action.arguments})}")
    if observation.ok:
        evidence.append(f"- output: {_compact(observation.output)}")
    if images:
        evidence.append(f"- images: {describe_images(images)}")
    return (
        f"{what} Evidence:\n" + "\n".join(evidence) + "\n"
        'Reflect first: write <reflection>{"error_type": "<one of ' + _ERROR_TYPES + '>", '
        '"evidence": "<quote the observation>", "fix_plan": "<what to change>"}</reflection> '
        "then exactly one corrected <tool_call> or <answer>."
    )
