"""The data engine end to end with the real tools: reference chats match the runtime, RoT targets parse,
trace branch points come from a real trace store, deduplication, and the save/load round trip."""

from __future__ import annotations

import asyncio

import pytest
from data_helpers import dataset, suite, task, toolbox

from regrpo.agent.actions import parse_action, parse_reflection
from regrpo.agent.loop import Agent
from regrpo.agent.prompts import render_system_prompt
from regrpo.agent.scripted import ScriptedPolicy
from regrpo.errors import ErrorType, InputError
from regrpo.learning.classify import classify_failure
from regrpo.learning.data_engine import Dataset, build_dataset, fix_plan, reference_example, reflection_turn
from regrpo.learning.near_miss import call_text, reference_call
from regrpo.learning.records import SFTExample
from regrpo.learning.replay import BranchEnvironment, observation_of
from regrpo.tasks.reference import output_text
from regrpo.tools import ImageInfo, ToolOutcome
from regrpo.traces.schema import Answer, Observation, ToolCall, Unparseable


def test_every_reference_holds_and_every_task_yields_rot_data():
    counts = dataset().counts
    assert counts.failed_references == []
    assert counts.sft_kinds["reference"] == len(suite())
    rot_tasks = {e.task_id for e in dataset().sft_examples if e.kind == "rot"}
    assert rot_tasks == {t.id for t in suite()}
    assert sum(counts.rot_error_types.values()) == counts.sft_kinds["rot"]
    assert sum(counts.near_miss_kinds.values()) == counts.branch_sources["near_miss"]


def test_every_rot_target_parses_as_a_grounded_reflection_and_the_reference_action():
    points = {tuple(p.messages): p for p in dataset().branch_points if p.failed}
    rot = [e for e in dataset().sft_examples if e.kind == "rot"]
    assert rot
    for example in rot:
        assert example.train_turns == [len(example.messages) - 1]
        target = example.messages[-1]
        assert target.role == "assistant"
        point = points[tuple(example.messages[:-1])]  # the branch point holds the same prompt
        reflection, problem = parse_reflection(target.content, point.observation)
        assert problem is None, (problem, target.content)
        assert reflection is not None and reflection.error_type is example.error_type is point.error_type
        assert parse_action(target.content) == point.target
        # the prompt ends exactly as the runtime's: the observation, then the reflection request
        assert example.messages[-2].content.startswith(point.observation + "\nThat action ")
        assert "Reflect first:" in example.messages[-2].content


def test_fix_plans_name_the_concrete_change():
    images = [ImageInfo("img_0", 640, 480, "user")]
    good = ToolCall("ocr", {"image": "img_0", "region": [0, 0, 100, 50]})
    assert fix_plan(ToolCall("count", {"image": "img_0", "text": "text"}), good) == (
        'call ocr instead of count, with arguments {"image":"img_0","region":[0,0,100,50]}'
    )
    assert fix_plan(ToolCall("ocr", {"image": "img_0", "region": [700, 0, 800, 50]}), good, images) == (
        "use region [0,0,100,50] inside the 640x480 image img_0 instead of [700,0,800,50]"
    )
    assert fix_plan(ToolCall("ocr", {"region": [0, 0, 100, 50]}), good) == 'add the image argument ("img_0")'
    assert fix_plan(ToolCall("ocr", {"image": "img_9", "region": [0, 0, 100, 50]}), good) == (
        'use image img_0 (an existing id) instead of "img_9"'
    )
    rotate = ToolCall("rotate", {"image": "img_0", "angle": 90})
    assert fix_plan(ToolCall("rotate", {"image": "img_0", "angle": "90 degrees"}), rotate) == (
        'pass angle as a number, 90, instead of "90 degrees"'
    )
    assert fix_plan(Unparseable("no tags"), rotate) == "write exactly one well-formed action: " + call_text(
        rotate
    )
    assert fix_plan(rotate, Answer("5")) == "stop calling tools and answer: <answer>5</answer>"


def test_reflection_turn_grounds_evidence_even_for_an_empty_error_message():
    observation = observation_of(ToolOutcome(False, error_type=ErrorType.TOOL_CRASH, message=""))
    call = ToolCall("ocr", {"image": "img_0"})
    text, error_type = reflection_turn(call, observation, call)
    assert error_type is ErrorType.TOOL_CRASH
    assert parse_reflection(text, observation.content)[1] is None


def test_reflection_turn_refuses_a_success():
    with pytest.raises(InputError, match="shows no failure"):
        reflection_turn(
            ToolCall("calculator", {"expression": "1+1"}),
            Observation(ok=True, content="2", output=2),
            Answer("2"),
        )


@pytest.mark.parametrize("category", ["count", "rotated_text"])
def test_reference_example_is_what_the_runtime_renders(category, store):
    subject = task(category)
    system_prompt = render_system_prompt(toolbox().members)
    example = reference_example(subject, toolbox(), system_prompt)
    assert example is not None and example.kind == "reference"
    replies = [m.content for m in example.messages if m.role == "assistant"]
    agent = Agent(ScriptedPolicy(replies), store=store, max_steps=len(replies))
    result = agent.run(subject.question, list(subject.images), metadata={"task_id": subject.id})
    assert result.status == "answered" and subject.check(result.answer)
    episode = store.get(result.trace_id)
    assert episode.messages == example.messages
    assert example.train_turns == [i for i, m in enumerate(example.messages) if m.role == "assistant"]


def test_a_near_miss_prompt_is_what_the_runtime_renders(store):
    point = next(
        p for p in dataset().branch_points if p.source == "near_miss" and p.task_id == task("expression").id
    )
    replies = [m.content for m in point.messages if m.role == "assistant"]
    agent = Agent(ScriptedPolicy([*replies, "<answer>0</answer>"]), store=store, max_steps=len(replies) + 1)
    result = agent.run(task("expression").question, list(task("expression").images))
    assert store.get(result.trace_id).messages[: len(point.messages)] == point.messages


def test_clean_points_follow_each_successful_reference_step():
    reference = {e.task_id: e for e in dataset().sft_examples if e.kind == "reference"}
    clean = [p for p in dataset().branch_points if not p.failed]
    assert len(clean) == sum(len(t.reference) for t in suite())
    for point in clean:
        assert point.source == "reference" and point.error_type is None and point.failed_action is None
        example = reference[point.task_id]
        assert example.messages[: len(point.messages)] == point.messages
        next_turn = example.messages[len(point.messages)].content
        expected = (
            call_text(point.target)
            if isinstance(point.target, ToolCall)
            else f"<answer>{point.target.text}</answer>"
        )
        assert next_turn == expected
    last = [p for p in clean if isinstance(p.target, Answer)]
    assert len(last) == len(suite())


def test_deduplication_drops_repeated_content():
    subject = task("count")
    twice = build_dataset([subject, subject], toolbox=toolbox(), progress=False)
    once = build_dataset([subject], toolbox=toolbox(), progress=False)
    assert twice.counts.duplicates_removed == len(once.sft_examples) + len(once.branch_points) > 0
    assert [p.id for p in twice.branch_points] == [p.id for p in once.branch_points]
    assert len({p.id for p in twice.branch_points}) == len(twice.branch_points)


def test_save_and_load_round_trip(tmp_path):
    original = dataset()
    folder = original.save(tmp_path / "data")
    assert {p.name for p in folder.iterdir()} == {"sft.jsonl", "branch_points.jsonl", "summary.json"}
    loaded = Dataset.load(folder)
    assert loaded == original
    assert isinstance(loaded.sft_examples[0], SFTExample)
    with pytest.raises(InputError, match="does not exist"):
        Dataset.load(tmp_path / "nowhere")


def test_bad_arguments_are_input_errors():
    with pytest.raises(InputError, match="near_misses_per_step"):
        build_dataset([task("count")], near_misses_per_step=-1, progress=False)


def test_trace_branch_points_from_a_real_store(store):
    subject = task("tiny_text")
    crop, read = reference_call(subject, 0), reference_call(subject, 1)
    wrong_read = ToolCall("ocr", {"image": "img_7"})
    script = [
        call_text(crop),
        call_text(wrong_read),  # fails: no such image
        '<reflection>{"error_type": "ArgInvalid", "evidence": "no img_7", "fix_plan": "img_1"}</reflection>'
        + call_text(read),
        f"<answer>{subject.answer.display()}</answer>",
    ]
    agent = Agent(ScriptedPolicy(script), store=store, max_steps=4)
    good = agent.run(subject.question, list(subject.images), metadata={"task_id": subject.id})
    assert good.status == "answered"
    # an episode that cropped elsewhere first: its img_1 is not the reference's img_1, so it is skipped
    stray = [
        call_text(ToolCall("crop", {"image": "img_0", "box": [0, 0, 50, 50]})),
        call_text(wrong_read),
        "<answer>x</answer>",
    ]
    Agent(ScriptedPolicy(stray), store=store, max_steps=3).run(
        subject.question, list(subject.images), metadata={"task_id": subject.id}
    )
    Agent(ScriptedPolicy(stray), store=store, max_steps=3).run(
        subject.question, list(subject.images)
    )  # no task id

    data = build_dataset([subject], toolbox=toolbox(), store=store, progress=False)
    assert data.counts.trace_episodes == 2 and data.counts.trace_unmatched == 1
    [point] = [p for p in data.branch_points if p.source == "trace"]
    episode = store.get(good.trace_id)
    assert point.messages == episode.messages[: episode.steps[2].prompt_messages]
    assert point.failed and point.error_type is ErrorType.ARG_INVALID
    assert point.failed_action == wrong_read and point.target == read and point.replay == [crop]
    assert point.observation == episode.steps[1].observation.content
    assert classify_failure(episode.steps[1].action, episode.steps[1].observation) is point.error_type
    # the state rebuilt at the point lets the target read the code, as in the episode
    execution = asyncio.run(BranchEnvironment(toolbox()).execute(point, point.target))
    assert subject.answer.display() in output_text(execution.outcome.output)
    [example] = [e for e in data.sft_examples if e.meta.get("source") == "trace"]
    assert example.messages[:-1] == point.messages and example.error_type is ErrorType.ARG_INVALID
    reflection, problem = parse_reflection(example.messages[-1].content, point.observation)
    assert problem is None and reflection is not None and parse_action(example.messages[-1].content) == read
