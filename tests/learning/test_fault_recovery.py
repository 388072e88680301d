"""Faulted reference calls: the evaluation's fault injection on the right call, kept if a retry fixes it."""

from __future__ import annotations

import asyncio

import pytest
from data_helpers import task, toolbox

from regrpo.errors import ErrorType, InputError
from regrpo.learning.fault_recovery import RETRY_FAULT_KINDS, afault_reference_call, faulty_toolbox
from regrpo.learning.near_miss import reference_call
from regrpo.learning.replay import BranchEnvironment


def faulted(subject, step: int, kinds=RETRY_FAULT_KINDS, n: int = 3):
    boxes = {kind: faulty_toolbox(toolbox(), kind) for kind in kinds}
    environment = BranchEnvironment(toolbox())
    replay = [
        reference_call(subject, i)
        for i in range(step)
        if reference_call(subject, i).name in ("crop", "rotate")
    ]
    return asyncio.run(
        afault_reference_call(subject, step, toolboxes=boxes, environment=environment, replay=replay, n=n)
    )


def test_timeouts_and_crashes_of_the_reference_call_are_kept_with_the_runtimes_messages():
    subject = task("expression")
    step = len(subject.reference) - 1  # the calculator step
    batch = faulted(subject, step, ("timeout", "crash"))
    by_kind = {f.kind: f for f in batch.kept}
    assert set(by_kind) == {"timeout", "crash"} and not batch.skipped
    assert by_kind["timeout"].error_type is ErrorType.TIMEOUT
    assert "calculator did not finish within" in by_kind["timeout"].observation.error_message
    assert by_kind["crash"].error_type is ErrorType.TOOL_CRASH
    assert by_kind["crash"].observation.error_message.startswith("calculator failed: ")
    assert all(f.call == reference_call(subject, step) and f.reason == "tool_error" for f in batch.kept)


def test_an_emptied_call_aimed_at_a_region_is_not_kept():
    subject = task("tiny_text")
    step = next(i for i, s in enumerate(subject.reference) if s.tool == "crop")
    batch = faulted(subject, step, ("empty",))
    # the crop still ran and made an image (or the call was aimed at a box): a retry is not the lesson
    assert not batch.kept and batch.skipped["empty"] == 1


def test_kinds_a_retry_does_not_fix_are_refused():
    with pytest.raises(InputError, match="not one a retry fixes"):
        faulty_toolbox(toolbox(), "garbled")  # type: ignore[arg-type]
