"""Rebuild the tool state at a branch point and execute an action there, with the real tools.

A branch point does not store pixels: it stores the task's image paths and the calls that made the
episode's tool-made images (:attr:`~regrpo.learning.records.BranchPoint.replay`). :func:`restore`
loads the task images as ``img_0``, ``img_1``, ... and re-runs those calls in order through the
:class:`~regrpo.tools.Toolbox`, so every later id (``img_2`` = the crop, ...) means what it meant in
the episode. Only image-making calls are replayed: a read-only call (ocr, search) changes no state.

ReGRPO executes a group of G continuations at one branch point, so :class:`BranchEnvironment` keeps
the restored states of the last few points (an LRU keyed by the point's images and replay) and hands
each continuation a *copy* of the store: a continuation that crops gets ``img_2`` without the next
continuation seeing it. The copy shares nothing mutable (arrays are copied, ids re-issued in order).
There is no module-level cache: the state lives in the environment object its caller owns.

An SFT example is rebuilt the same way for an engine that takes images (:func:`example_images`):
its task images, then each of its own calls whose observation showed new images, re-run in order.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from regrpo.agent.actions import parse_action
from regrpo.agent.loop import image_record
from regrpo.agent.turn import observation_of
from regrpo.errors import InputError
from regrpo.learning.records import BranchPoint, SFTExample
from regrpo.tools import ImageStore, Toolbox, ToolContext, ToolOutcome
from regrpo.traces.schema import ImageRecord, Observation, ToolCall

__all__ = [
    "BranchEnvironment",
    "Execution",
    "ReplayError",
    "copy_store",
    "example_images",
    "execute_at",
    "observation_of",
    "restore",
]

StateSource = BranchPoint | tuple[Sequence[str], Sequence[ToolCall]]
"""A branch point, or ``(image paths, replay calls)``."""


class ReplayError(InputError):
    """A branch point's replay call failed, so its state cannot be rebuilt (stale data or changed tools)."""


@dataclass(frozen=True)
class Execution:
    """One action executed at a branch point: the toolbox's outcome and the images after it."""

    outcome: ToolOutcome
    context: ToolContext
    """The state after the call (a private copy: new images of this call are in it)."""

    @property
    def observation(self) -> Observation:
        return observation_of(self.outcome)


def _parts(source: StateSource) -> tuple[tuple[str, ...], tuple[ToolCall, ...]]:
    if isinstance(source, BranchPoint):
        return tuple(source.images), tuple(source.replay)
    images, replay = source
    return tuple(images), tuple(replay)


def copy_store(store: ImageStore) -> ImageStore:
    """A new store with the same images under the same ids (arrays copied, sources kept)."""
    copy = ImageStore()
    for info in store.infos():
        copy.add(store.get(info.image_id), source=info.source)
    return copy


async def restore(source: StateSource, toolbox: Toolbox) -> ToolContext:
    """A fresh :class:`ToolContext` holding the task images and the replayed tool-made images.

    Raises :class:`ReplayError` if a replay call fails (its message names the call and the failure),
    or, at a branch point that recorded them (``BranchPoint.replay_images``), if the replayed images
    are not the pixels the episode's calls made.
    """
    images, replay = _parts(source)
    store = ImageStore()
    for path in images:
        store.add(path)
    context = ToolContext(images=store)
    for index, call in enumerate(replay):
        outcome = await toolbox.call(call.name, call.arguments, context)
        if not outcome.ok:
            raise ReplayError(
                f"replay call {index} ({call.name} {call.arguments}) failed: {outcome.error_type}: "
                f"{outcome.message}; rebuild the branch points with the current tools"
            )
    if isinstance(source, BranchPoint):
        _check_replayed(source.replay_images, store)
    return context


async def example_images(example: SFTExample, toolbox: Toolbox) -> ImageStore:
    """Every image ``example``'s messages show: its task images, then the output of each call whose
    observation showed new images, re-run in order with ``toolbox``.

    Raises :class:`ReplayError` when the example's images cannot be rebuilt: task images it does not
    list (an example written before ``SFTExample.images``), or a call that now makes other ids than
    the observation after it showed.
    """
    store = ImageStore()
    for path in example.images:
        store.add(path)
    context = ToolContext(images=store)
    messages = example.messages
    task = next((i for i, m in enumerate(messages) if m.role == "user"), len(messages))
    shown = messages[task].images if task < len(messages) else ()
    if len(shown) != len(example.images):
        raise ReplayError(
            f"the example for {example.task_id!r} shows {len(shown)} task images but lists "
            f"{len(example.images)}; rebuild the data with this regrpo"
        )
    for index in range(task + 1, len(messages)):
        message = messages[index]
        if message.role != "user" or not message.images:
            continue
        call = parse_action(messages[index - 1].content)
        made: tuple[str, ...] = ()
        if isinstance(call, ToolCall):
            outcome = await toolbox.call(call.name, call.arguments, context)
            made = tuple(outcome.new_images) if outcome.ok else ()
        if made != message.images:
            raise ReplayError(
                f"re-running the example's call before {message.images} made {made or 'no images'}; "
                "the tools changed since it was built, so its prompt cannot be rebuilt"
            )
    return store


def _check_replayed(recorded: Sequence[ImageRecord], store: ImageStore) -> None:
    """Refuse a replay whose images differ from what the episode recorded (the tools changed since)."""
    for record in recorded:
        if record.image_id not in store:
            raise ReplayError(
                f"replaying the episode's calls did not make {record.image_id}, which they made when it "
                "ran; the tools changed since, so its prompt cannot be rebuilt"
            )
        made = image_record(store, record.image_id)
        if made.sha256 != record.sha256:
            raise ReplayError(
                f"replaying the episode's calls made {record.image_id} ({made.width}x{made.height}) with "
                f"other pixels than it recorded ({record.width}x{record.height}, sha256 "
                f"{record.sha256[:12]}...); the tools changed since, so its prompt cannot be rebuilt"
            )


async def execute_at(branch_point: StateSource, action: ToolCall, toolbox: Toolbox) -> ToolOutcome:
    """Restore the state at ``branch_point`` and run ``action`` there (uncached; see BranchEnvironment)."""
    context = await restore(branch_point, toolbox)
    return await toolbox.call(action.name, action.arguments, context)


class BranchEnvironment:
    """Executes actions at branch points, restoring each point's state once and copying it per action.

    Args:
        toolbox: The real tools (the same toolbox the agent runs with).
        max_states: Restored states kept (least recently used are dropped first).
    """

    def __init__(self, toolbox: Toolbox, *, max_states: int = 4) -> None:
        if max_states < 1:
            raise InputError(f"max_states must be at least 1, got {max_states}")
        self.toolbox = toolbox
        self.max_states = max_states
        self.restores = 0
        """How many times a state was rebuilt from scratch (a cache miss)."""
        self._states: OrderedDict[tuple[str, bytes], ImageStore] = OrderedDict()

    def _key(self, source: StateSource) -> tuple[str, bytes]:
        images, replay = _parts(source)
        return "\n".join(images), msgspec.json.encode(list(replay))

    async def context(self, source: StateSource) -> ToolContext:
        """A private copy of the state at ``source`` (restored once, then served from the LRU)."""
        key = self._key(source)
        store = self._states.get(key)
        if store is None:
            store = (await restore(source, self.toolbox)).images
            self.restores += 1
            self._states[key] = store
            while len(self._states) > self.max_states:
                self._states.popitem(last=False)
        else:
            self._states.move_to_end(key)
        return ToolContext(images=copy_store(store))

    async def execute(self, source: StateSource, action: ToolCall) -> Execution:
        """Run ``action`` on a private copy of the state at ``source``."""
        context = await self.context(source)
        outcome = await self.toolbox.call(action.name, action.arguments, context)
        return Execution(outcome, context)
