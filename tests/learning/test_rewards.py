"""The local reward at a branch point and the trajectory reward, on hand-made actions and outcomes."""

from __future__ import annotations

import math

import pytest

from regrpo.errors import ErrorType
from regrpo.learning.records import BranchPoint
from regrpo.learning.rewards import (
    RewardWeights,
    episode_reward,
    local_fix,
    otc_tool_reward,
    score_continuation,
)
from regrpo.tasks.schema import AnswerSpec
from regrpo.tools import ToolOutcome
from regrpo.traces.schema import Answer, Message, Reflection, ToolCall, Unparseable


def point(target, *, expects=(), failed=True, answer=None) -> BranchPoint:
    return BranchPoint(
        id="p",
        task_id="t",
        messages=[Message("user", "q")],
        images=[],
        replay=[],
        failed=failed,
        error_type=ErrorType.UNKNOWN_TOOL if failed else None,
        observation="Error (UnknownTool): unknown tool 'calculater'",
        failed_action=ToolCall("calculater", {"expression": "2+2"}) if failed else None,
        target=target,
        expects=list(expects),
        answer=answer,
    )


CALC = ToolCall("calculator", {"expression": "2+2"})


def test_a_fix_needs_the_right_tool_a_working_call_and_the_expected_output():
    p = point(CALC, expects=["4"])
    assert local_fix(p, CALC, ToolOutcome(ok=True, output=4))
    assert not local_fix(p, CALC, ToolOutcome(ok=True, output=5))  # ran, but not what the step needed
    assert not local_fix(p, CALC, ToolOutcome(ok=False, message="boom"))
    assert not local_fix(p, ToolCall("ocr", {"image": "img_0"}), ToolOutcome(ok=True, output={"text": "4"}))
    assert not local_fix(p, Unparseable("no tags"), None)


def test_without_expects_arguments_must_agree_and_boxes_by_overlap():
    crop = ToolCall("crop", {"image": "img_0", "box": [0, 0, 100, 100]})
    p = point(crop)
    ok = ToolOutcome(ok=True, output={"image": "img_1"})
    assert local_fix(p, ToolCall("crop", {"image": "img_0", "box": [5, 5, 100, 100]}), ok)  # IoU 0.9
    assert not local_fix(p, ToolCall("crop", {"image": "img_0", "box": [60, 60, 160, 160]}), ok)  # IoU 0.09
    assert not local_fix(p, ToolCall("crop", {"image": "img_1", "box": [0, 0, 100, 100]}), ok)
    assert not local_fix(
        p, ToolCall("crop", {"image": "img_0", "box": [0, 0, 100, 100]}), ToolOutcome(ok=True, output={})
    )


def test_an_answer_target_is_judged_by_the_task_verifier():
    p = point(Answer("4"), answer=AnswerSpec(kind="number", value=4.0))
    assert local_fix(p, Answer("4.0"), None)
    assert not local_fix(p, Answer("5"), None)
    assert not local_fix(p, CALC, ToolOutcome(ok=True, output=4))


def test_reward_adds_fix_and_diagnosis_and_charges_reflection_tokens():
    weights = RewardWeights()
    right = Reflection(ErrorType.UNKNOWN_TOOL, "unknown tool 'calculater'", "call calculator")
    wrong = Reflection(ErrorType.ARG_INVALID, "unknown tool 'calculater'", "call calculator")
    p = point(CALC, expects=["4"])
    good = score_continuation(p, CALC, ToolOutcome(ok=True, output=4), right, 30, weights)
    assert good.reward == pytest.approx(1.0 + 0.25 - 0.1 * 30 / 100)
    assert good.fixed and good.diagnosed and not good.needless
    misdiagnosed = score_continuation(p, CALC, ToolOutcome(ok=True, output=4), wrong, 30, weights)
    assert misdiagnosed.reward == pytest.approx(1.0 - 0.03)
    longer = score_continuation(p, CALC, ToolOutcome(ok=True, output=4), right, 90, weights)
    assert longer.reward < good.reward  # the reflection cost: same fix, more tokens, less reward


def test_reflecting_where_nothing_failed_is_penalised():
    p = point(CALC, expects=["4"], failed=False)
    reflection = Reflection(ErrorType.UNKNOWN_TOOL, "x", "y")
    plain = score_continuation(p, CALC, ToolOutcome(ok=True, output=4), None, 0, RewardWeights())
    needless = score_continuation(p, CALC, ToolOutcome(ok=True, output=4), reflection, 20, RewardWeights())
    assert plain.reward == 1.0
    assert needless.needless and not needless.diagnosed
    assert needless.reward == pytest.approx(1.0 - 0.02 - 0.1)


def test_otc_tool_reward_peaks_at_the_fewest_calls_of_a_correct_rollout():
    assert otc_tool_reward(2, 2) == pytest.approx(1.0)
    assert otc_tool_reward(4, 2) < otc_tool_reward(3, 2) < 1.0
    assert otc_tool_reward(0, 2) == pytest.approx(0.0)
    assert otc_tool_reward(3, None) == 1.0  # no correct rollout: neutral
    assert otc_tool_reward(2, 0) == pytest.approx(math.cos(2 * math.pi / 5))
    assert episode_reward(True, 4, 2, tool_cost=True) == pytest.approx(otc_tool_reward(4, 2))
    assert episode_reward(True, 4, 2, tool_cost=False) == 1.0
    assert episode_reward(False, 1, 2, tool_cost=True) == 0.0
