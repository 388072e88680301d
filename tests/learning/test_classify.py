"""classify_failure: the rules that label RoT data, on hand-made observations and real tool outcomes."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from regrpo.errors import ErrorType
from regrpo.learning.classify import classify_failure
from regrpo.learning.replay import observation_of
from regrpo.tools import FaultConfig, ImageStore, Toolbox, ToolContext, default_tools, inject_faults
from regrpo.traces.schema import Answer, Observation, ToolCall, Unparseable


def ok(output) -> Observation:
    return Observation(ok=True, content="", output=output)


def test_unparseable_turn_is_unparseable_action_whatever_the_observation():
    observation = Observation(ok=False, content="", error_type=ErrorType.UNPARSEABLE_ACTION)
    assert classify_failure(Unparseable("no tags"), observation) is ErrorType.UNPARSEABLE_ACTION
    assert classify_failure(Unparseable("no tags"), None) is ErrorType.UNPARSEABLE_ACTION


def test_an_answer_ran_nothing_and_a_success_is_no_failure():
    assert classify_failure(Answer("42"), None) is None
    call = ToolCall("calculator", {"expression": "1+1"})
    assert classify_failure(call, ok(2)) is None
    assert classify_failure(ToolCall("count", {"image": "img_0", "text": "star"}), ok({"count": 0})) is None


@pytest.mark.parametrize("kind", list(ErrorType))
def test_a_failed_observation_keeps_its_own_error_type(kind):
    failed = Observation(ok=False, content="", error_type=kind, error_message="boom")
    assert classify_failure(ToolCall("ocr", {"image": "img_0"}), failed) is kind


def test_a_failure_without_a_type_is_a_crash():
    failed = Observation(ok=False, content="", error_message="boom")
    assert classify_failure(ToolCall("ocr", {"image": "img_0"}), failed) is ErrorType.TOOL_CRASH


def test_empty_output_is_info_insufficient_unless_the_call_aimed_at_a_region():
    empty = ok({"text": "", "lines": []})
    assert classify_failure(ToolCall("ocr", {"image": "img_0"}), empty) is ErrorType.INFO_INSUFFICIENT
    assert classify_failure(ToolCall("ocr", {"image": "img_0", "region": None}), empty) is (
        ErrorType.INFO_INSUFFICIENT
    )
    aimed = ToolCall("ocr", {"image": "img_0", "region": [0, 0, 5, 5]})
    assert classify_failure(aimed, empty) is ErrorType.GROUNDING_DRIFT
    assert (
        classify_failure(ToolCall("search", {"query": "x"}), ok({"results": []}))
        is ErrorType.INFO_INSUFFICIENT
    )


def test_real_tool_outcomes_are_classified_by_what_the_tools_said():
    toolbox = Toolbox(default_tools())
    store = ImageStore()
    store.add(np.full((40, 60, 3), 255, dtype=np.uint8))
    context = ToolContext(images=store)

    def verdict(name: str, arguments: dict) -> ErrorType | None:
        outcome = asyncio.run(toolbox.call(name, arguments, context))
        return classify_failure(ToolCall(name, arguments), observation_of(outcome))

    assert verdict("calculator", {"expression": "(2 + 3"}) is ErrorType.ARG_INVALID
    assert verdict("crop", {"image": "img_0", "box": [100, 100, 120, 120]}) is ErrorType.GROUNDING_DRIFT
    assert verdict("cropp", {"image": "img_0", "box": [0, 0, 10, 10]}) is ErrorType.UNKNOWN_TOOL
    assert verdict("crop", {"image": "img_0", "box": [0, 0, 10, 10]}) is None


@pytest.mark.parametrize(
    ("kind", "expected"), [("timeout", ErrorType.TIMEOUT), ("crash", ErrorType.TOOL_CRASH)]
)
def test_injected_transient_faults_are_classified_as_the_runtime_reports_them(kind, expected):
    # the evaluation's fault injection, on a call that is right: the verdict names the fault
    toolbox = Toolbox(inject_faults(default_tools(), FaultConfig(**{kind: 1.0})))
    call = ToolCall("calculator", {"expression": "1 + 1"})
    outcome = asyncio.run(toolbox.call(call.name, call.arguments, ToolContext(images=ImageStore())))
    assert classify_failure(call, observation_of(outcome)) is expected
