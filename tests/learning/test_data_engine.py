"""The data engine end to end with the real tools: reference chats match the runtime, RoT targets parse,
trace branch points come from a real trace store, deduplication, and the save/load round trip."""

from __future__ import annotations

import asyncio
import json

import pytest
from data_helpers import dataset, suite, task, toolbox

from regrpo.agent.actions import (
    ACTION_STOP_STRINGS,
    is_grounded,
    parse_action,
    parse_reflection,
    split_reflection,
)
from regrpo.agent.loop import Agent
from regrpo.agent.prompts import render_system_prompt
from regrpo.agent.scripted import ScriptedPolicy
from regrpo.errors import ErrorType, InputError
from regrpo.learning.budget import DEFAULT_TARGET_TOKENS, policy_token_counter
from regrpo.learning.classify import classify_failure
from regrpo.learning.data_engine import (
    DataEngineConfig,
    Dataset,
    build_dataset,
    fix_plan,
    reference_example,
    reflection_turn,
)
from regrpo.learning.near_miss import call_text, reference_call
from regrpo.learning.records import SFTExample
from regrpo.learning.reflections import MAX_BREVITY, evidence
from regrpo.learning.replay import BranchEnvironment, observation_of
from regrpo.tasks.reference import output_text
from regrpo.tools import FaultConfig, ImageInfo, ToolOutcome, default_tools, inject_faults
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


def test_fix_plans_name_the_concrete_change_in_words():
    images = [ImageInfo("img_0", 640, 480, "user")]
    good = ToolCall("ocr", {"image": "img_0", "region": [0, 0, 100, 50]})
    assert fix_plan(ToolCall("count", {"image": "img_0", "text": "text"}), good) == "call ocr, not count"
    assert fix_plan(ToolCall("ocr", {"image": "img_0", "region": [700, 0, 800, 50]}), good, images) == (
        "use region [0,0,100,50] inside the 640x480 img_0"
    )
    assert fix_plan(ToolCall("ocr", {"region": [0, 0, 100, 50]}), good) == "add the image argument"
    assert fix_plan(ToolCall("ocr", {"image": "img_9", "region": [0, 0, 100, 50]}), good) == (
        "use image img_0, which exists"
    )
    rotate = ToolCall("rotate", {"image": "img_0", "angle": 90})
    assert fix_plan(ToolCall("rotate", {"image": "img_0", "angle": "90 degrees"}), rotate) == (
        "pass angle as a number"
    )
    assert (
        fix_plan(Unparseable("no tags"), rotate)
        == "write one rotate call as valid JSON with name and arguments"
    )
    assert fix_plan(rotate, Answer("5")) == "stop calling tools and answer"
    assert fix_plan(rotate, rotate, error_type=ErrorType.TIMEOUT) == (
        "the call was right but timed out; retry it unchanged"
    )
    # other variants word the same change differently; none writes a tag
    plans = {fix_plan(ToolCall("count", {"image": "img_0"}), good, variant=v) for v in range(3)}
    assert len(plans) == 3 and all("<" not in plan for plan in plans)


def test_no_target_holds_a_stop_string_or_a_tag_and_every_target_fits_the_budget():
    # 23 of 148 RoT targets of `regrpo train data` quoted </tool_call> inside the reflection, and 76
    # were longer than the demo's 112 tokens: generation would stop mid-reflection or cut the action
    count = policy_token_counter()
    for example in dataset().sft_examples:
        for turn in example.train_turns:
            text = example.messages[turn].content
            body, action = split_reflection(text)
            assert all(stop not in (body or "") for stop in ACTION_STOP_STRINGS), text
            assert "<" not in (body or "") and ">" not in (body or ""), text
            assert action.strip().endswith(ACTION_STOP_STRINGS), text
            assert count(text) <= DEFAULT_TARGET_TOKENS, text
    counts = dataset().counts
    assert counts.target_token_budget == DEFAULT_TARGET_TOKENS
    assert 0 < counts.rot_target_tokens["p50"] <= counts.rot_target_tokens["max"] <= DEFAULT_TARGET_TOKENS
    assert set(counts.target_tokens) == {"p50", "p90", "p99", "max"}


def test_rot_targets_are_not_one_template():
    rot = [e.messages[-1].content for e in dataset().sft_examples if e.kind == "rot"]
    openings = {json.loads(split_reflection(t)[0] or "{}")["evidence"].split(" ")[0] for t in rot}
    assert len(openings) >= 4, openings


def test_a_target_over_the_budget_fails_loudly_naming_the_example():
    with pytest.raises(InputError, match=r"example of task .* tokens, over the budget of 40"):
        build_dataset([task("expression")], config=DataEngineConfig(target_tokens=40), progress=False)


def test_fault_examples_retry_the_reference_call_after_timeouts_and_crashes():
    faults = [e for e in dataset().sft_examples if e.meta.get("source") == "fault"]
    points = {tuple(p.messages): p for p in dataset().branch_points if p.source == "fault"}
    assert {e.error_type for e in faults} >= {ErrorType.TIMEOUT, ErrorType.TOOL_CRASH}
    assert len(points) == len(faults) == sum(dataset().counts.fault_kinds.values())
    for example in faults:
        point = points[tuple(example.messages[:-1])]
        assert point.failed and point.error_type is example.error_type
        assert point.failed_action == point.target == parse_action(example.messages[-1].content)
        assert example.messages[-2].content.startswith(point.observation + "\nThat action ")
        reflection, problem = parse_reflection(example.messages[-1].content, point.observation)
        assert problem is None and reflection is not None and reflection.error_type is example.error_type
        assert "retry" in reflection.fix_plan or "same call" in reflection.fix_plan


@pytest.mark.parametrize("kind", ["timeout", "crash"])
def test_a_fault_prompt_is_what_the_runtime_shows_under_the_evaluations_fault_injection(kind, store):
    # at the first step, so every call the faulty runtime makes is the one the point records
    error_type = {"timeout": ErrorType.TIMEOUT, "crash": ErrorType.TOOL_CRASH}[kind]
    point = next(
        p
        for p in dataset().branch_points
        if p.source == "fault" and len(p.messages) == 4 and p.error_type is error_type
    )
    subject = next(t for t in suite() if t.id == point.task_id)
    replies = [m.content for m in point.messages if m.role == "assistant"]
    tools = inject_faults(default_tools(), FaultConfig(**{kind: 1.0}, seed=0))
    agent = Agent(ScriptedPolicy([*replies, "<answer>0</answer>"]), tools, store, max_steps=len(replies) + 1)
    result = agent.run(subject.question, list(subject.images))
    assert store.get(result.trace_id).messages[: len(point.messages)] == point.messages


def test_evidence_quotes_the_message_without_tags_or_the_error_type():
    observation = observation_of(
        ToolOutcome(False, error_type=ErrorType.UNPARSEABLE_ACTION, message="the <tool_call> is not JSON")
    )
    text, _ = reflection_turn(Unparseable("x"), observation, ToolCall("ocr", {"image": "img_0"}))
    body = json.loads(split_reflection(text)[0] or "{}")
    assert "<" not in body["evidence"] and "tool_call" in body["evidence"]
    assert is_grounded(body["evidence"], observation.error_message)  # the message alone grounds it
    assert "UnparseableAction" not in body["evidence"]


def test_reflection_turn_refuses_an_observation_with_nothing_to_quote():
    # a crash with no message is shown as a bare "Error:" (the text no longer names the error type)
    observation = observation_of(ToolOutcome(False, error_type=ErrorType.TOOL_CRASH, message=""))
    call = ToolCall("ocr", {"image": "img_0"})
    with pytest.raises(InputError, match="nothing a reflection can quote"):
        reflection_turn(call, observation, call)
    crashed = observation_of(
        ToolOutcome(False, error_type=ErrorType.TOOL_CRASH, message="ocr failed: OSError: I/O error")
    )
    text, error_type = reflection_turn(call, crashed, call)
    assert error_type is ErrorType.TOOL_CRASH and parse_reflection(text, crashed.content)[1] is None


@pytest.mark.parametrize(
    "outcome",
    [
        ToolOutcome(True, output=None),  # an emptied calculator result: "null." was not "null"
        ToolOutcome(True, output={"text": "", "lines": []}),
        ToolOutcome(True, output={"results": []}),
        ToolOutcome(False, error_type=ErrorType.TOOL_CRASH, message="boom"),
        ToolOutcome(
            False, error_type=ErrorType.TOOL_CRASH, message="ocr failed: OSError: [Errno 5] I/O error"
        ),
        ToolOutcome(False, error_type=ErrorType.ARG_INVALID, message="no image with id 'img_7'"),
    ],
)
def test_every_phrasing_at_every_brevity_quotes_the_tool_itself(outcome):
    observation, call = observation_of(outcome), ToolCall("ocr", {"image": "img_0"})
    for variant in range(4):
        for brevity in range(MAX_BREVITY + 1):
            quote = evidence(call, observation, variant, brevity)
            assert is_grounded(quote, observation.content) and not quote.startswith("The observation"), quote


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
    with pytest.raises(InputError, match="not fixed by a retry"):
        DataEngineConfig(fault_kinds=("garbled",))
    with pytest.raises(InputError, match="target_tokens"):
        DataEngineConfig(target_tokens=0)


def test_trace_branch_points_from_a_real_store(store):
    subject = task("tiny_text")
    steps = [reference_call(subject, i) for i in range(len(subject.reference))]
    prefix, read = steps[:-1], steps[-1]  # ... crop, then read the crop
    crops = [call for call in prefix if call.name == "crop"]
    assert crops and read.name == "ocr"
    wrong_read = ToolCall("ocr", {"image": "img_7"})
    script = [
        *map(call_text, prefix),
        call_text(wrong_read),  # fails: no such image
        '<reflection>{"error_type": "ArgInvalid", "evidence": "no img_7", "fix_plan": "img_1"}</reflection>'
        + call_text(read),
        f"<answer>{subject.answer.display()}</answer>",
    ]
    failed_at = len(prefix)
    agent = Agent(ScriptedPolicy(script), store=store, max_steps=len(script))
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
    assert point.messages == episode.messages[: episode.steps[failed_at + 1].prompt_messages]
    assert point.failed and point.error_type is ErrorType.ARG_INVALID
    assert point.failed_action == wrong_read and point.target == read and point.replay == crops
    failure = episode.steps[failed_at]
    assert point.observation == failure.observation.content
    assert classify_failure(failure.action, failure.observation) is point.error_type
    # the state rebuilt at the point lets the target read the code, as in the episode
    execution = asyncio.run(BranchEnvironment(toolbox()).execute(point, point.target))
    assert subject.answer.display() in output_text(execution.outcome.output)
    [example] = [e for e in data.sft_examples if e.meta.get("source") == "trace"]
    assert example.messages[:-1] == point.messages and example.error_type is ErrorType.ARG_INVALID
    reflection, problem = parse_reflection(example.messages[-1].content, point.observation)
    assert problem is None and reflection is not None and parse_action(example.messages[-1].content) == read


@pytest.mark.parametrize("category", ["expression", "tiny_text"])
def test_rot_continuations_go_on_through_the_answer_and_train_those_turns(category):
    subject = task(category)
    config = DataEngineConfig(near_misses_per_step=2, seed=0, rot_continuations=True)
    continued = build_dataset([subject], config=config, toolbox=toolbox(), progress=False)
    plain = {
        tuple(e.messages[:-1]): e
        for e in dataset().sft_examples
        if e.kind == "rot" and e.task_id == subject.id
    }
    reference = next(e for e in dataset().sft_examples if e.kind == "reference" and e.task_id == subject.id)
    rot = [e for e in continued.sft_examples if e.kind == "rot"]
    assert rot and len(rot) == len(plain)
    for example in rot:
        fix = example.train_turns[0]
        short = plain[tuple(example.messages[:fix])]  # the same prompt and RoT target as without
        assert example.messages[: fix + 1] == short.messages
        if not example.meta.get("continued"):
            assert example.train_turns == [fix] and len(example.messages) == fix + 1
            continue
        k = example.meta["step_index"]
        # after the fix: the reference's own observation of step k and everything after, answer last
        assert example.messages[fix + 1 :] == reference.messages[2 + 2 * k + 1 :]
        assert example.messages[-1].content.startswith("<answer>")
        later = [i for i in range(fix + 1, len(example.messages)) if example.messages[i].role == "assistant"]
        assert later and example.train_turns == [fix, *later]
    assert any(e.meta.get("continued") for e in rot)


def test_every_sft_example_rebuilds_each_image_its_messages_show():
    """What SFT on an engine that takes images needs: the task images each example lists, and each
    image its calls made, re-made by replaying them (regrpo.learning.replay.example_images)."""
    from regrpo.learning.replay import example_images

    with_tool_images = 0
    for example in dataset().sft_examples:
        store = asyncio.run(example_images(example, toolbox()))
        shown = [image for message in example.messages for image in message.images]
        assert shown and set(shown) <= {info.image_id for info in store.infos()}
        assert (
            len(store)
            >= len(example.images)
            == len(next(m for m in example.messages if m.role == "user").images)
        )
        with_tool_images += len(store) > len(example.images)
    assert with_tool_images > 0  # some examples show a crop's or a rotation's output
