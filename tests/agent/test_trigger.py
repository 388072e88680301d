"""The reflection trigger (ReGRPO's rule) and reflection parsing with the grounding check."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regrpo.agent.actions import is_grounded, parse_reflection
from regrpo.agent.trigger import ReflectionTrigger, is_empty_output, sequence_confidence, trigger_reason
from regrpo.errors import ErrorType
from regrpo.traces import Reflection


@pytest.mark.parametrize(
    "output",
    [None, "", "  ", [], {}, (), {"a": None}, {"text": "", "lines": []}, {"objects": []}, {"r": {"s": []}}],
)
def test_empty_outputs(output):
    assert is_empty_output(output)


@pytest.mark.parametrize("output", [0, False, "0", [0], [[]], {"count": 0}, {"text": "x", "lines": []}])
def test_non_empty_outputs(output):
    assert not is_empty_output(output)


def test_confidence_is_exp_mean_logprob():
    assert sequence_confidence([math.log(0.5), math.log(0.125)]) == pytest.approx(0.25)
    assert sequence_confidence([]) is None


def test_trigger_rule():
    assert trigger_reason(failed=True, empty=False, confidence=0.9, running_mean=0.1) == "tool_error"
    assert trigger_reason(failed=False, empty=True, confidence=0.9, running_mean=None) == "empty_observation"
    assert trigger_reason(failed=False, empty=False, confidence=0.4, running_mean=0.5) == "low_confidence"
    assert trigger_reason(failed=False, empty=False, confidence=0.6, running_mean=0.5) is None
    assert trigger_reason(failed=False, empty=False, confidence=0.1, running_mean=None) is None  # first step


def test_trigger_keeps_the_running_mean_of_earlier_steps():
    trigger = ReflectionTrigger(use_confidence=True)
    assert trigger.decide(failed=False, empty=False, confidence=0.9) is None  # i = 1: no κ yet
    assert trigger.decide(failed=False, empty=False, confidence=0.7) == "low_confidence"  # 0.7 < 0.9
    assert trigger.last_running_mean == pytest.approx(0.9)
    assert trigger.decide(failed=False, empty=False, confidence=0.85) is None  # 0.85 > mean(0.9, 0.7)
    assert ReflectionTrigger(use_confidence=False).decide(failed=False, empty=False, confidence=0.0) is None


def test_the_low_confidence_term_is_off_by_default():
    trigger = ReflectionTrigger()
    assert trigger.decide(failed=False, empty=False, confidence=0.9) is None
    assert trigger.decide(failed=False, empty=False, confidence=0.1) is None  # worked: no reflection
    assert trigger.decide(failed=False, empty=True, confidence=0.1) == "empty_observation"
    assert trigger.decide(failed=True, empty=False, confidence=0.9) == "tool_error"


OBSERVATION = (
    "<tool_response>Error (ArgInvalid): cannot parse expression '17*/23': invalid syntax</tool_response>"
)


def test_valid_grounded_reflection():
    text = (
        '<reflection>{"error_type": "arg_invalid", "evidence": "it says cannot parse expression 17*/23", '
        '"fix_plan": "drop the slash"}</reflection><tool_call>{}</tool_call>'
    )
    reflection, problem = parse_reflection(text, OBSERVATION)
    assert problem is None
    assert reflection.error_type is ErrorType.ARG_INVALID
    assert reflection.fix_plan == "drop the slash"


def test_ungrounded_evidence_is_kept_but_flagged():
    body = '{"error_type": "ToolMismatch", "evidence": "I was wrong", "fix_plan": "retry"}'
    text = f"<reflection>{body}</reflection>"
    reflection, problem = parse_reflection(text, OBSERVATION)
    assert reflection is not None and reflection.error_type is ErrorType.TOOL_MISMATCH
    assert "does not quote" in problem


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("<tool_call>{}</tool_call>", "missing"),
        ("<reflection>not json</reflection>", "JSON"),
        (
            '<reflection>{"error_type": "Oops", "evidence": "x", "fix_plan": "y"}</reflection>',
            "unknown error_type",
        ),
        ('<reflection>{"error_type": "Timeout", "fix_plan": "y"}</reflection>', "evidence"),
        (
            '<reflection>{"error_type": "Timeout", "evidence": "parse", "fix_plan": ""}</reflection>',
            "fix_plan",
        ),
    ],
)
def test_invalid_reflections_say_why(text, problem):
    reflection, found = parse_reflection(text, OBSERVATION)
    assert reflection is None
    assert problem in found


def test_grounding_rule():
    assert is_grounded("the expression could not be parsed", OBSERVATION)  # shares "expression"
    assert not is_grounded("bad call", OBSERVATION)
    assert not is_grounded("the tool failed with an error", OBSERVATION)  # generic words only


@settings(max_examples=400, deadline=None)
@given(text=st.text(max_size=300), observation=st.text(max_size=100))
def test_any_turn_gives_a_reflection_or_a_reason(text, observation):
    reflection, problem = parse_reflection(text, observation)
    assert reflection is not None or problem  # never both missing: a failure always says why
    if reflection is not None:
        assert reflection.evidence.strip() and reflection.fix_plan.strip()


@settings(max_examples=200, deadline=None)
@given(
    error_type=st.sampled_from(list(ErrorType)),
    evidence=st.text(min_size=1, max_size=60).filter(str.strip),
    fix_plan=st.text(min_size=1, max_size=60).filter(str.strip),
)
def test_any_well_formed_reflection_round_trips(error_type, evidence, fix_plan):
    body = json.dumps({"error_type": error_type.value, "evidence": evidence, "fix_plan": fix_plan})
    reflection, _ = parse_reflection(f"<reflection>{body}</reflection><answer>x</answer>", evidence)
    assert reflection == Reflection(error_type, evidence.strip(), fix_plan.strip())


def test_evidence_may_quote_tags():
    quoted = "the reply had </reflection> and <answer> in it"
    body = json.dumps({"error_type": "UnparseableAction", "evidence": quoted, "fix_plan": "one action"})
    reflection, problem = parse_reflection(f"<reflection>{body}</reflection><answer>4</answer>", quoted)
    assert problem is None and reflection.evidence == quoted
