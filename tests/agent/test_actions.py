"""Parsing model turns into actions: examples, then hypothesis fuzzing."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from regrpo.agent.actions import parse_action
from regrpo.traces import Answer, ToolCall, Unparseable


def test_tool_call_with_text_around_it():
    text = (
        'I will compute it. <tool_call>{"name": "calculator", "arguments": {"expression": "1+2"}}</tool_call>'
    )
    assert parse_action(text) == ToolCall("calculator", {"expression": "1+2"})


def test_lenient_forms_are_accepted():
    # Python-literal quotes, arguments as a JSON string, "parameters" key, missing closing tag
    assert parse_action("<tool_call>{'name': 'crop', 'arguments': {'box': [1, 2, 3, 4]}}") == ToolCall(
        "crop", {"box": [1, 2, 3, 4]}
    )
    assert parse_action(
        '<tool_call>{"name": "crop", "arguments": "{\\"image\\": \\"img_0\\"}"}</tool_call>'
    ) == ToolCall("crop", {"image": "img_0"})
    assert parse_action('<tool_call>{"name": "f", "parameters": {"x": 1}}</tool_call>') == ToolCall(
        "f", {"x": 1}
    )
    assert parse_action("<answer> 391 </answer>") == Answer("391")
    assert parse_action("<answer>391") == Answer("391")


def test_no_guessing():
    assert isinstance(parse_action("17*23 = 391"), Unparseable)  # no tags: not an answer
    assert isinstance(parse_action("<answer>  </answer>"), Unparseable)
    assert isinstance(parse_action("<tool_call>calculator(17*23)</tool_call>"), Unparseable)
    assert isinstance(parse_action('<tool_call>{"arguments": {}}</tool_call>'), Unparseable)
    assert isinstance(parse_action('<tool_call>{"name": "f", "arguments": [1]}</tool_call>'), Unparseable)
    assert isinstance(parse_action('<tool_call>["f"]</tool_call>'), Unparseable)


def test_two_actions_are_refused_with_a_reason():
    action = parse_action('<tool_call>{"name": "a", "arguments": {}}</tool_call><answer>4</answer>')
    assert isinstance(action, Unparseable)
    assert "exactly one" in action.reason


def test_reflection_block_is_not_the_action():
    text = (
        '<reflection>{"error_type": "ArgInvalid", "evidence": "<answer>x</answer>", "fix_plan": "p"}'
        '</reflection><tool_call>{"name": "calculator", "arguments": {"expression": "2"}}</tool_call>'
    )
    assert parse_action(text) == ToolCall("calculator", {"expression": "2"})


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=300))
def test_any_text_parses_to_some_action(text):
    assert isinstance(parse_action(text), (ToolCall, Answer, Unparseable))


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(
    name=st.from_regex(r"[a-z_][a-z0-9_]{0,20}", fullmatch=True),
    arguments=st.dictionaries(st.text(max_size=10), json_values, max_size=4),
    before=st.text(alphabet=st.characters(blacklist_characters="<{"), max_size=40),
)
def test_any_well_formed_tool_call_round_trips(name, arguments, before):
    text = f"{before}<tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"
    assert parse_action(text) == ToolCall(name, arguments)


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=80).filter(lambda s: s.strip() and "<" not in s))
def test_any_answer_round_trips(answer):
    assert parse_action(f"<answer>{answer}</answer>") == Answer(answer.strip())


def test_tags_quoted_inside_a_reflection_do_not_leak_into_the_action():
    evidence = "the reply had </reflection> and <answer>3</answer> in it"
    text = (
        "<reflection>"
        + json.dumps({"error_type": "UnparseableAction", "evidence": evidence, "fix_plan": "p"})
        + "</reflection><answer>4</answer>"
    )
    assert parse_action(text) == Answer("4")
