"""Transient faults on the right call: the reference call itself fails, and the fix is to retry it.

Evaluation (and GRPO rollouts) wrap the tools with :func:`~regrpo.tools.faults.inject_faults`, so the
model meets timeouts, crashes and emptied outputs on calls that were *right*. Near-misses
(:mod:`regrpo.learning.near_miss`) never show one: every near-miss fix changes the call. This module
makes the missing case with the same machinery the evaluation uses: at the state before reference
step k, the reference call runs through a toolbox whose tools are wrapped to fail with one fault kind
at rate 1 (:func:`faulty_toolbox`), and the observation is the one the runtime would record and show.

The kinds used, and when a faulted call is kept (:data:`RETRY_FAULT_KINDS`):

============  =====================================================================================
``timeout``   always fails (``Timeout``, the Toolbox's own deadline message); a retry is the fix.
``crash``     always fails (``ToolCrash``, ``"<name> failed: RuntimeError: ..."``); a retry is the fix.
``empty``     kept only when the runtime flags it (an empty output, so its trigger asks for a
              reflection) *and* the classifier says ``InfoInsufficient``: an emptied call that was
              aimed at a region is classified ``GroundingDrift``, whose lesson is "aim elsewhere",
              and an emptied call that still made an image would make a second one on retry.
============  =====================================================================================

``garbled`` and ``wrong_region`` are not used: a garbled output is an ``ok``, non-empty observation,
which neither the runtime's trigger nor :func:`~regrpo.learning.classify.classify_failure` flags (a
RoT prompt there would be one the runtime never shows), and a moved box is a grounding error whose
fix is a different box, not a retry. Faults that are tried but not kept are counted per kind.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from regrpo.errors import TRANSIENT_ERROR_TYPES, ErrorType, InputError
from regrpo.learning.classify import classify_failure
from regrpo.learning.near_miss import reference_call
from regrpo.learning.replay import BranchEnvironment, observation_of
from regrpo.tasks.schema import Task
from regrpo.tools import ImageInfo, Toolbox
from regrpo.tools.faults import FaultConfig, FaultKind, inject_faults
from regrpo.traces.schema import Observation, ToolCall

__all__ = ["RETRY_FAULT_KINDS", "FaultBatch", "FaultedCall", "afault_reference_call", "faulty_toolbox"]

RETRY_FAULT_KINDS: tuple[FaultKind, ...] = ("timeout", "crash", "empty")
"""Injected faults a retry of the same call recovers from (see the module docstring)."""


@dataclass(frozen=True)
class FaultedCall:
    """A reference call that failed under an injected fault, as the runtime would record it."""

    kind: FaultKind
    step_index: int
    call: ToolCall
    """The reference call: both the action that failed and the action to retry."""
    observation: Observation
    error_type: ErrorType
    """:func:`classify_failure` of the observation (``Timeout``, ``ToolCrash`` or ``InfoInsufficient``)."""
    images: list[ImageInfo]
    """The images after the failed call (what the runtime's reflection request lists)."""

    @property
    def reason(self) -> str:
        """The runtime trigger's reason: ``tool_error`` or ``empty_observation``."""
        return "tool_error" if not self.observation.ok else "empty_observation"


@dataclass
class FaultBatch:
    """The faulted calls kept at one step, and the faults tried but not kept, per kind."""

    kept: list[FaultedCall] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)


def faulty_toolbox(toolbox: Toolbox, kind: FaultKind, seed: int = 0) -> Toolbox:
    """``toolbox``'s tools wrapped to fail with ``kind`` on every call (same deadline and retries)."""
    if kind not in RETRY_FAULT_KINDS:
        raise InputError(f"fault kind {kind!r} is not one a retry fixes; use one of {RETRY_FAULT_KINDS}")
    config = FaultConfig(
        timeout=float(kind == "timeout"),
        crash=float(kind == "crash"),
        empty=float(kind == "empty"),
        seed=seed,
        timeout_s=toolbox.default_timeout_s,
    )
    return Toolbox(
        inject_faults(toolbox.members, config),
        default_timeout_s=toolbox.default_timeout_s,
        max_attempts=toolbox.max_attempts,
    )


async def afault_reference_call(
    task: Task,
    step_index: int,
    *,
    toolboxes: dict[FaultKind, Toolbox],
    environment: BranchEnvironment,
    replay: Sequence[ToolCall],
    n: int = 1,
    seed: int = 0,
) -> FaultBatch:
    """Up to ``n`` faulted runs of reference step ``step_index``, one fault kind each.

    ``toolboxes`` maps each kind to try to its :func:`faulty_toolbox`; the kinds are tried in a
    seeded order (``random.Random`` seeded by seed, task and step), each on a private copy of the state
    before the step (``environment``, built on the *real* toolbox, restores it from ``replay``).
    """
    if not 0 <= step_index < len(task.reference):
        raise InputError(f"task {task.id} has {len(task.reference)} reference steps; no step {step_index}")
    call = reference_call(task, step_index)
    rng = random.Random(f"fault:{seed}:{task.id}:{step_index}")
    batch = FaultBatch()
    for kind in rng.sample(sorted(toolboxes), len(toolboxes)):
        if len(batch.kept) >= n:
            break
        context = await environment.context((task.images, list(replay)))
        observation = observation_of(await toolboxes[kind].call(call.name, call.arguments, context))
        verdict = classify_failure(call, observation)
        retry_fixes_it = verdict in TRANSIENT_ERROR_TYPES or (
            verdict is ErrorType.INFO_INSUFFICIENT and not observation.new_images
        )
        if verdict is None or not retry_fixes_it:
            batch.skipped[kind] += 1
            continue
        batch.kept.append(FaultedCall(kind, step_index, call, observation, verdict, context.images.infos()))
    return batch
