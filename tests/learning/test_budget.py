"""The target checks: stop strings, tags inside a reflection, the token budget, length percentiles."""

from __future__ import annotations

import pytest

from regrpo.errors import InputError
from regrpo.learning.budget import check_target, tag_free, token_percentiles

CALL = '<tool_call>{"name": "ocr", "arguments": {"image": "img_0"}}</tool_call>'


def words(text: str) -> int:
    return len(text.split())


def test_a_short_target_ending_at_its_action_passes_and_reports_its_length():
    body = '{"error_type": "Timeout", "evidence": "ocr did not finish", "fix_plan": "retry"}'
    text = f"<reflection>{body}</reflection>\n"
    assert check_target(text + CALL, "ex", words, 100) == words(text + CALL)
    assert check_target("<answer>42</answer>", "ex", words, 100) == 1


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        # the old data engine's fix plan: generation stops at the first </tool_call>, mid-reflection
        (
            '<reflection>{"error_type": "UnknownTool", "evidence": "e", "fix_plan": "write ' + CALL + '"}'
            "</reflection>\n" + CALL,
            "would not stop at the end",
        ),
        (
            '<reflection>{"error_type": "ArgInvalid", "evidence": "the <tool_call> is bad", "fix_plan": "p"}'
            "</reflection>\n" + CALL,
            "quotes a tag",
        ),
        ("I think the answer is 4", "no stop string"),
    ],
)
def test_a_target_the_runtime_would_cut_is_an_input_error_naming_the_example(text, problem):
    with pytest.raises(InputError, match=f"rot example 7: .*{problem}"):
        check_target(text, "rot example 7", words, 100)


def test_a_target_over_the_budget_names_its_length():
    with pytest.raises(InputError, match="rot example 7: its target is 3 tokens, over the budget of 2"):
        check_target("<answer>a b c</answer>", "rot example 7", words, 2)


def test_tag_free_writes_tags_as_bare_names_or_drops_them():
    assert tag_free("the <tool_call> does not hold </answer>") == "the tool_call does not hold answer"
    assert tag_free("<tool_response>Error: boom</tool_response>", keep_names=False) == "Error: boom"


def test_token_percentiles_are_nearest_rank():
    assert token_percentiles(list(range(1, 101))) == {"p50": 50, "p90": 90, "p99": 99, "max": 100}
    assert token_percentiles([7]) == {"p50": 7, "p90": 7, "p99": 7, "max": 7}
    assert token_percentiles([]) == {"p50": 0, "p90": 0, "p99": 0, "max": 0}
