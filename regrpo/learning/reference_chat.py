"""A task's reference solution, run with the real tools and rendered exactly as the runtime renders it.

The data engine's ground truth (:mod:`regrpo.learning.data_engine`): the runtime's system prompt,
``render_task``, one ``<tool_call>`` turn per reference step, the real observation (with the
runtime's reflection request where the runtime would ask for one), then ``<answer>``. A recording
that does not hold (a step failed, an ``expects`` is missing, the last output lacks the answer) says
why and makes no example.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from regrpo.agent.prompts import render_task
from regrpo.agent.trigger import ReflectionTrigger
from regrpo.agent.turn import user_turn
from regrpo.learning.near_miss import call_text, reference_call
from regrpo.learning.records import SFTExample
from regrpo.learning.replay import observation_of
from regrpo.tasks.reference import output_holds_answer, output_text
from regrpo.tasks.schema import Task
from regrpo.tasks.verifiers import contains_normalized
from regrpo.tools import ImageInfo, ImageStore, Toolbox, ToolContext
from regrpo.traces.schema import Message, Observation, ToolCall

__all__ = [
    "ReferenceRecording",
    "record_reference",
    "reference_example",
    "reference_sft",
]


@dataclass(frozen=True)
class ReferenceRecording:
    """A task's reference run with the real tools, rendered as the runtime would render it."""

    task: Task
    messages: list[Message]
    """system, task, then (assistant call, user observation) per executed step; no answer turn."""
    observations: list[Observation]
    images: list[list[ImageInfo]]
    """``images[k]``: the images before step k (``images[len(steps)]``: after the last step)."""
    replays: list[list[ToolCall]]
    """``replays[k]``: the image-making reference calls before step k (same indexing as ``images``)."""
    ok: bool
    reason: str | None = None

    def prefix(self, step_index: int) -> list[Message]:
        """The conversation before reference step ``step_index`` is sampled."""
        return self.messages[: 2 + 2 * step_index]

    def after(self, step_index: int) -> list[Message]:
        """The conversation after reference step ``step_index``'s call: its real observation, every
        later step, and the answer turn (what follows once that call has been made)."""
        return [*self.messages[2 + 2 * step_index + 1 :], Message("assistant", _answer_text(self.task))]


async def record_reference(task: Task, toolbox: Toolbox, system_prompt: str) -> ReferenceRecording:
    """Run ``task.reference`` through ``toolbox`` and check it holds (``expects``, then the answer)."""
    store = ImageStore()
    for path in task.images:
        store.add(path)
    context = ToolContext(images=store)
    messages = [
        Message("system", system_prompt),
        Message(
            "user",
            render_task(task.question.strip(), store.infos()),
            images=tuple(info.image_id for info in store.infos()),
        ),
    ]
    observations: list[Observation] = []
    images: list[list[ImageInfo]] = [store.infos()]
    replays: list[list[ToolCall]] = [[]]
    replay: list[ToolCall] = []

    def stop(reason: str) -> ReferenceRecording:
        return ReferenceRecording(task, messages, observations, images, replays, False, reason)

    for index, step in enumerate(task.reference):
        call = reference_call(task, index)
        observation = observation_of(await toolbox.call(call.name, call.arguments, context))
        observations.append(observation)
        messages += [
            Message("assistant", call_text(call)),
            Message(
                "user",
                user_turn(observation, call, ReflectionTrigger(), store.infos())[0],
                images=tuple(observation.new_images),
            ),
        ]
        if not observation.ok:
            return stop(
                f"step {index} ({call.name}) failed: {observation.error_type}: {observation.error_message}"
            )
        text = output_text(observation.output)
        missing = [want for want in step.expects if not contains_normalized(text, want)]
        if missing:
            return stop(f"step {index} ({call.name}) output lacks {missing}")
        if observation.new_images:
            replay = [*replay, call]
        images.append(store.infos())
        replays.append(replay)
    final = output_text(observations[-1].output) if observations else ""
    if not output_holds_answer(task.answer, final):
        return stop(f"the last output {final[:200]!r} does not check as {task.answer.display()!r}")
    return ReferenceRecording(task, messages, observations, images, replays, True)


def _answer_text(task: Task) -> str:
    return f"<answer>{task.answer.display()}</answer>"


def reference_sft(recording: ReferenceRecording) -> SFTExample:
    messages = [*recording.messages, Message("assistant", _answer_text(recording.task))]
    turns = [i for i, m in enumerate(messages) if m.role == "assistant"]
    return SFTExample(
        messages,
        turns,
        "reference",
        recording.task.id,
        meta={"steps": len(recording.task.reference)},
        images=list(recording.task.images),
    )


def reference_example(task: Task, toolbox: Toolbox, system_prompt: str) -> SFTExample | None:
    """The task's reference solution as a chat to imitate; ``None`` if the reference does not hold.

    Must not be called from a running event loop (use :func:`record_reference` there).
    """
    recording = asyncio.run(record_reference(task, toolbox, system_prompt))
    return reference_sft(recording) if recording.ok else None
