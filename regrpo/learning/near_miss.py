"""Near-miss actions: seeded perturbations of a known-good call, kept only if they really fail.

ReGRPO's data engine (``regrpo/data/perturb.py`` in the public code, ``shared/REFERENCES.md`` §2.2)
turns a reference step into a *near-miss*: the action a model plausibly takes instead, one mistake
away from the right one. The reference release then lets a teacher model write the failure text; we
**execute every near-miss with the real tools** at the state before the step
(:class:`~regrpo.learning.replay.BranchEnvironment`) and keep it only when it really fails — the
observation is not ok, or the call ran and returned nothing. A near-miss that works (a shifted crop
that still lands on the image, a substitute tool that happens to read text) is discarded and counted,
never relabelled: the failure text a model learns to reflect on is always one a tool really printed.

The operators, one function each in :data:`OPERATORS` (a perturbation kind → operator table):

=======================  ==================================================================
``wrong_tool``           a real but unsuitable tool with arguments adapted to its schema
``misspelt_tool``        the tool's name with one typo (→ ``UnknownTool``)
``missing_argument``     a required argument dropped
``mistyped_argument``    a number or list given as a string, an image id as a number
``out_of_bounds_box``    the box/region moved off the image (→ ``GroundingDrift``)
``shifted_box``          the box/region moved elsewhere on the image, or a small stray region
``wrong_image_id``       an image id that does not exist (``img_9``)
``broken_syntax``        the call written so the parser rejects it (→ ``UnparseableAction``)
``calculator_unbalanced``  the expression with an unbalanced parenthesis
``calculator_unknown_name``  a function the calculator does not have
=======================  ==================================================================

An operator returns ``None`` where it does not apply (no box to shift). Which error type a kept
near-miss is labelled with is decided by :func:`~regrpo.learning.classify.classify_failure` on the real
observation, not by the operator's intent: a wrong tool mostly fails schema validation (``ArgInvalid``)
and only sometimes says ``ToolMismatch`` (the detector refusing a label it lacks).
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from regrpo.agent.actions import parse_action
from regrpo.agent.prompts import observation_text
from regrpo.agent.trigger import is_empty_output
from regrpo.errors import ErrorType, InputError
from regrpo.learning.classify import classify_failure
from regrpo.learning.replay import BranchEnvironment
from regrpo.tasks.schema import Task
from regrpo.tools import ImageInfo, Toolbox
from regrpo.traces.schema import Observation, ToolCall, Unparseable

__all__ = [
    "OPERATORS",
    "NearMiss",
    "NearMissBatch",
    "Perturbation",
    "StepState",
    "WEIGHTS",
    "amake_near_misses",
    "call_text",
    "make_near_misses",
    "perturbations",
    "reference_call",
]


def call_text(call: ToolCall) -> str:
    """An assistant turn making ``call``, written exactly like the system prompt's example."""
    body = json.dumps({"name": call.name, "arguments": call.arguments}, ensure_ascii=False)
    return f"<tool_call>{body}</tool_call>"


def reference_call(task: Task, step_index: int) -> ToolCall:
    """The reference step ``step_index`` of ``task`` as a :class:`ToolCall`."""
    step = task.reference[step_index]
    return ToolCall(name=step.tool, arguments=dict(step.arguments))


@dataclass(frozen=True)
class StepState:
    """What an operator may look at: the images before the step and the toolbox."""

    images: list[ImageInfo]
    toolbox: Toolbox
    question: str = ""
    """The task's question (a wrong tool may be handed it, as a confused model would)."""

    def size(self, image_id: Any) -> tuple[int, int] | None:
        """``(width, height)`` of an image id, ``None`` if there is no such image."""
        for info in self.images:
            if info.image_id == image_id:
                return info.width, info.height
        return None


@dataclass(frozen=True)
class Perturbation:
    """A candidate near-miss: its kind and either a call or a raw (broken) assistant text."""

    kind: str
    action: ToolCall | str

    @property
    def text(self) -> str:
        return self.action if isinstance(self.action, str) else call_text(self.action)


Operator = Callable[[ToolCall, StepState, random.Random], "ToolCall | str | None"]


# -- the operators ----------------------------------------------------------------------------------

_SUBSTITUTES: dict[str, tuple[str, ...]] = {
    "ocr": ("count", "detect", "search"),
    "count": ("ocr", "search"),
    "detect": ("ocr",),
    "calculator": ("count", "search"),
    "search": ("calculator", "ocr"),
    "crop": ("resize", "rotate", "grayscale"),
    "rotate": ("flip", "ocr"),
}
"""Unsuitable stand-ins per tool: what a model plausibly reaches for instead (others: any tool)."""


def _first_text(arguments: dict[str, Any]) -> str | None:
    for name, value in arguments.items():
        if isinstance(value, str) and name != "image":
            return value
    return None


def _fill(name: str, call: ToolCall, state: StepState) -> Any:
    """A plausible value for a required argument of the substitute tool, or ``None`` to leave it out."""
    args = call.arguments
    image = args.get("image", state.images[0].image_id if state.images else "img_0")
    text = _first_text(args)
    if name == "image":
        return image
    if name in ("text", "label"):
        return text or "text"
    if name in ("query", "expression"):
        return text or state.question or call.name
    if name == "direction":
        return "horizontal"
    if name == "angle":
        return 90
    if name == "box":
        size = state.size(image)
        return [0, 0, size[0], size[1]] if size else None
    return None


def wrong_tool(call: ToolCall, state: StepState, rng: random.Random) -> ToolCall | None:
    names = [n for n in _SUBSTITUTES.get(call.name, ()) if n in state.toolbox.names]
    names = names or [n for n in state.toolbox.names if n != call.name]
    if not names:
        return None
    name = rng.choice(names)
    tool = state.toolbox.get(name)
    assert tool is not None  # names come from the toolbox
    schema = tool.parameters_schema()
    arguments = {k: v for k, v in call.arguments.items() if k in schema.get("properties", {})}
    for required in schema.get("required", []):
        if required not in arguments and (value := _fill(required, call, state)) is not None:
            arguments[required] = value
    return ToolCall(name, arguments)


def misspelt_tool(call: ToolCall, state: StepState, rng: random.Random) -> ToolCall | None:
    name = call.name
    typos = [name + "s", name[:-1], name + name[-1]]
    if len(name) > 3:
        i = rng.randrange(1, len(name) - 1)
        typos += [name[:i] + name[i + 1 :], name[:i] + name[i + 1] + name[i] + name[i + 2 :]]
    typos = [t for t in typos if t and t != name and t not in state.toolbox.names]
    return ToolCall(rng.choice(typos), dict(call.arguments)) if typos else None


def _schema(call: ToolCall, state: StepState) -> dict[str, Any]:
    tool = state.toolbox.get(call.name)
    return tool.parameters_schema() if tool is not None else {}


def missing_argument(call: ToolCall, state: StepState, rng: random.Random) -> ToolCall | None:
    required = [name for name in _schema(call, state).get("required", []) if name in call.arguments]
    if not required:
        return None
    dropped = rng.choice(required)
    return ToolCall(call.name, {k: v for k, v in call.arguments.items() if k != dropped})


def _mistyped(name: str, value: Any) -> Any:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return f"{value:g} {'degrees' if name == 'angle' else 'units'}"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if name == "image" and isinstance(value, str) and value.startswith("img_") and value[4:].isdigit():
        return int(value[4:])
    return None


def mistyped_argument(call: ToolCall, state: StepState, rng: random.Random) -> ToolCall | None:
    options = [(k, m) for k, v in call.arguments.items() if (m := _mistyped(k, v)) is not None]
    if not options:
        return None
    name, value = rng.choice(options)
    return ToolCall(call.name, {**call.arguments, name: value})


def _region_name(call: ToolCall, state: StepState) -> str | None:
    """The argument that aims the call at a region (``box`` or ``region``), if its tool has one."""
    properties = _schema(call, state).get("properties", {})
    return next((n for n in ("box", "region") if n in properties), None)


def out_of_bounds_box(call: ToolCall, state: StepState, rng: random.Random) -> ToolCall | None:
    name, size = _region_name(call, state), state.size(call.arguments.get("image"))
    if name is None or size is None:
        return None
    width, height = size
    box = call.arguments.get(name)
    if isinstance(box, list) and len(box) == 4:
        # the same box, one image-width (or -height) off: coordinates from a different image size
        dx, dy = (width, 0) if rng.random() < 0.5 else (0, height)
        moved = [box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy]
    else:
        moved = [0, height + 10, width, height + 10 + max(10, height // 4)]  # a strip below the image
    return ToolCall(call.name, {**call.arguments, name: moved})


def shifted_box(call: ToolCall, state: StepState, rng: random.Random) -> ToolCall | None:
    name, size = _region_name(call, state), state.size(call.arguments.get("image"))
    if name is None or size is None:
        return None
    width, height = size
    box = call.arguments.get(name)
    if isinstance(box, list) and len(box) == 4:
        w, h = box[2] - box[0], box[3] - box[1]
        x = min(max(0, box[0] + rng.choice((-3, 3)) * w), max(0, width - w))
        y = min(max(0, box[1] + rng.choice((-3, 3)) * h), max(0, height - h))
        moved = [x, y, x + w, y + h]
    else:  # a small stray region instead of the whole image
        w, h = max(16, width // 8), max(16, height // 8)
        x, y = rng.randrange(0, max(1, width - w)), rng.randrange(0, max(1, height - h))
        moved = [x, y, x + w, y + h]
    return None if moved == box else ToolCall(call.name, {**call.arguments, name: moved})


def wrong_image_id(call: ToolCall, state: StepState, rng: random.Random) -> ToolCall | None:
    if "image" not in call.arguments:
        return None
    missing = next(f"img_{i}" for i in range(9, 100) if state.size(f"img_{i}") is None)
    return ToolCall(call.name, {**call.arguments, "image": missing})


def broken_syntax(call: ToolCall, state: StepState, rng: random.Random) -> str | None:
    body = json.dumps({"name": call.name, "arguments": call.arguments}, ensure_ascii=False)
    python_args = ", ".join(f"{k}={v!r}" for k, v in call.arguments.items())
    variants = [
        f"<tool_call>{body[:-1]}</tool_call>",  # the closing brace forgotten
        f"{call.name}({python_args})",  # a Python call, no tags
        "<tool_call>" + body.replace('"name"', '"tool"', 1) + "</tool_call>",  # the wrong key
    ]
    text = rng.choice(variants)
    return text if isinstance(parse_action(text), Unparseable) else None


def _expression(call: ToolCall) -> str | None:
    expression = call.arguments.get("expression")
    return expression if call.name == "calculator" and isinstance(expression, str) else None


def calculator_unbalanced(call: ToolCall, state: StepState, rng: random.Random) -> ToolCall | None:
    expression = _expression(call)
    if expression is None:
        return None
    if ")" in expression and rng.random() < 0.5:
        cut = expression.rfind(")")
        broken = expression[:cut] + expression[cut + 1 :]
    else:
        broken = "(" + expression
    return ToolCall(call.name, {**call.arguments, "expression": broken})


def calculator_unknown_name(call: ToolCall, state: StepState, rng: random.Random) -> ToolCall | None:
    expression = _expression(call)
    if expression is None:
        return None
    broken = expression.replace("round(", "rnd(", 1) if "round(" in expression else f"sum({expression})"
    return ToolCall(call.name, {**call.arguments, "expression": broken})


OPERATORS: dict[str, Operator] = {
    "wrong_tool": wrong_tool,
    "misspelt_tool": misspelt_tool,
    "missing_argument": missing_argument,
    "mistyped_argument": mistyped_argument,
    "out_of_bounds_box": out_of_bounds_box,
    "shifted_box": shifted_box,
    "wrong_image_id": wrong_image_id,
    "broken_syntax": broken_syntax,
    "calculator_unbalanced": calculator_unbalanced,
    "calculator_unknown_name": calculator_unknown_name,
}


WEIGHTS: dict[str, float] = {"wrong_tool": 3.0, "shifted_box": 3.0, "out_of_bounds_box": 2.0}
"""Sampling weights (others 1). Schema mistakes fail every time and would crowd out the paper's two
largest classes, GroundingDrift and ToolMismatch (0.29 and 0.25 of its data), so operators that can
produce them are tried first more often."""


def perturbations(call: ToolCall, state: StepState, rng: random.Random) -> list[Perturbation]:
    """Every operator's candidate for ``call`` (those that apply), distinct, in a seeded weighted order.

    The order is a weighted shuffle (Efraimidis-Spirakis keys ``u ** (1 / weight)``, see :data:`WEIGHTS`).
    """
    kinds = sorted(OPERATORS, key=lambda kind: rng.random() ** (1.0 / WEIGHTS.get(kind, 1.0)), reverse=True)
    seen = {call_text(call)}
    found = []
    for kind in kinds:
        action = OPERATORS[kind](call, state, rng)
        if action is None:
            continue
        candidate = Perturbation(kind, action)
        if candidate.text not in seen:
            seen.add(candidate.text)
            found.append(candidate)
    return found


# -- executing them ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class NearMiss:
    """A near-miss that really failed, with everything a RoT example or branch point needs."""

    kind: str
    step_index: int
    text: str
    """The assistant turn that made it."""
    action: ToolCall | Unparseable
    observation: Observation
    """The real observation, as the runtime records it."""
    error_type: ErrorType
    """:func:`classify_failure` of the real observation."""
    reference: ToolCall
    images: list[ImageInfo]
    """The images after the near-miss ran (what the runtime's reflection request lists)."""

    @property
    def reason(self) -> str:
        """The runtime trigger's reason: ``tool_error`` or ``empty_observation``."""
        return "tool_error" if not self.observation.ok else "empty_observation"


@dataclass
class NearMissBatch:
    """The near-misses kept at one step, and what was thrown away."""

    kept: list[NearMiss] = field(default_factory=list)
    discarded: Counter[str] = field(default_factory=Counter)
    """Per kind: candidates whose call succeeded (so they are not near-*misses*)."""


def _unparseable_observation(action: Unparseable) -> Observation:
    draft = Observation(
        ok=False, content="", error_type=ErrorType.UNPARSEABLE_ACTION, error_message=action.reason
    )
    return msgspec.structs.replace(draft, content=observation_text(draft))


async def amake_near_misses(
    task: Task,
    step_index: int,
    *,
    toolbox: Toolbox,
    replay: Sequence[ToolCall],
    environment: BranchEnvironment | None = None,
    n: int = 2,
    seed: int = 0,
) -> NearMissBatch:
    """Up to ``n`` near-misses of reference step ``step_index`` that really fail at the state before it.

    ``replay`` are the image-making reference calls before the step (their ids must match the task's
    reference). Candidates are tried in a seeded order (``random.Random`` seeded by seed, task and
    step), each executed on a private copy of the state; the first ``n`` that fail are kept.
    """
    if not 0 <= step_index < len(task.reference):
        raise InputError(f"task {task.id} has {len(task.reference)} reference steps; no step {step_index}")
    env = environment or BranchEnvironment(toolbox)
    source = (task.images, list(replay))
    state = StepState((await env.context(source)).images.infos(), toolbox, task.question)
    rng = random.Random(f"{seed}:{task.id}:{step_index}")
    good = reference_call(task, step_index)
    batch = NearMissBatch()
    for candidate in perturbations(good, state, rng):
        if len(batch.kept) >= n:
            break
        if isinstance(candidate.action, str):
            action = parse_action(candidate.action)
            assert isinstance(action, Unparseable)  # broken_syntax checks this
            observation, images = _unparseable_observation(action), state.images
            verdict = classify_failure(action, observation)
        else:
            action = candidate.action
            execution = await env.execute(source, action)
            observation, images = execution.observation, execution.context.images.infos()
            failed = not observation.ok or is_empty_output(observation.output)
            verdict = classify_failure(action, observation) if failed else None
        if verdict is None:
            batch.discarded[candidate.kind] += 1
            continue
        batch.kept.append(
            NearMiss(candidate.kind, step_index, candidate.text, action, observation, verdict, good, images)
        )
    return batch


def make_near_misses(
    task: Task,
    step_index: int,
    *,
    toolbox: Toolbox,
    replay: Sequence[ToolCall],
    n: int = 2,
    seed: int = 0,
) -> NearMissBatch:
    """:func:`amake_near_misses` for callers outside an event loop."""
    return asyncio.run(amake_near_misses(task, step_index, toolbox=toolbox, replay=replay, n=n, seed=seed))
