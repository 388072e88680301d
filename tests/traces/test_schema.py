"""The trace schema: serialization is derived from the Structs, and a round trip loses nothing."""

from __future__ import annotations

import json

import msgspec
import pytest

from regrpo.errors import ErrorType
from regrpo.traces import (
    Answer,
    Completion,
    Episode,
    Feedback,
    ImageRecord,
    Message,
    Observation,
    Reflection,
    Step,
    StepTimings,
    ToolCall,
    Unparseable,
    Usage,
)


def _episode() -> Episode:
    """An episode touching every field: a failed call, a reflection, an unparseable turn, an answer."""
    failed_call = Step(
        index=0,
        prompt_messages=2,
        completion=Completion(
            text='<tool_call>{"name": "calculator", "arguments": {"expression": "17*/23"}}</tool_call>',
            token_ids=[101, 7, 99],
            logprobs=[-0.25, -1.5, -0.125],
            prompt_tokens=57,
        ),
        action=ToolCall("calculator", {"expression": "17*/23", "nested": {"a": [1, 2.5, None, True]}}),
        observation=Observation(
            ok=False,
            content="Error (ArgInvalid): cannot parse expression '17*/23'",
            error_type=ErrorType.ARG_INVALID,
            error_message="cannot parse expression '17*/23'",
            attempts=1,
        ),
        confidence=0.61,
        timings=StepTimings(generate_s=0.5, tool_s=0.01, total_s=0.52),
    )
    fixed_call = Step(
        index=1,
        prompt_messages=4,
        completion=Completion(
            text="<reflection>...</reflection><tool_call>...</tool_call>", finish_reason="stop"
        ),
        action=ToolCall("crop", {"image": "img_0", "box": [0, 0, 4, 4]}),
        observation=Observation(
            ok=True,
            content='{"image": "img_1"}',
            output={"image": "img_1", "size": [4, 4]},
            new_images=["img_1"],
            attempts=2,
        ),
        reflection=Reflection(
            ErrorType.ARG_INVALID,
            evidence="cannot parse expression '17*/23'",
            fix_plan="remove the stray slash",
        ),
        reflection_requested="the previous action failed",
        reflection_tokens=23,
        adapter="v3",
    )
    rambling = Step(
        index=2,
        prompt_messages=6,
        completion=Completion(text="I think the answer might be", finish_reason="length"),
        action=Unparseable("no <tool_call> or <answer> tag"),
        observation=Observation(
            ok=False, content="Error (UnparseableAction): ...", error_type=ErrorType.UNPARSEABLE_ACTION
        ),
        reflection_requested="the previous action failed",
        reflection_problem="no <reflection> block",
    )
    answer = Step(
        index=3, prompt_messages=8, completion=Completion(text="<answer>391</answer>"), action=Answer("391")
    )
    return Episode(
        trace_id="0123456789abcdef",
        task="What is 17*23?",
        started_at=1_700_000_000.25,
        model="scripted",
        adapter="v3",
        images=[ImageRecord("img_0", width=640, height=480, sha256="ab" * 32)],
        system_prompt="You are an agent.",
        messages=[Message("system", "You are an agent."), Message("user", "What is 17*23? ünïcödé ✓")]
        + [Message("assistant" if i % 2 == 0 else "user", f"turn {i}") for i in range(6)],
        steps=[failed_call, fixed_call, rambling, answer],
        status="answered",
        answer="391",
        usage=Usage(
            steps=4,
            prompt_tokens=200,
            completion_tokens=40,
            tool_calls=2,
            tool_failures=1,
            reflections=1,
            valid_reflections=1,
            reflection_tokens=23,
            generate_s=1.5,
            tool_s=0.02,
            wall_s=1.75,
        ),
        ended_at=1_700_000_001.75,
        feedback=[Feedback(reward=1.0, answer="391", created_at=1_700_000_002.0)],
        metadata={"suite": "demo", "seed": 7, "tags": ["math"]},
    )


# -- round trips ------------------------------------------------------------------------------------------


def test_msgpack_round_trip_is_lossless() -> None:
    episode = _episode()
    decoded = msgspec.msgpack.decode(msgspec.msgpack.encode(episode), type=Episode)
    assert decoded == episode
    assert isinstance(decoded.steps[0].action, ToolCall)
    assert isinstance(decoded.steps[2].action, Unparseable)
    assert isinstance(decoded.steps[3].action, Answer)
    assert decoded.steps[1].reflection.error_type is ErrorType.ARG_INVALID  # type: ignore[union-attr]


def test_json_round_trip_is_lossless() -> None:
    episode = _episode()
    decoded = msgspec.json.decode(msgspec.json.encode(episode), type=Episode)
    assert decoded == episode
    assert decoded.steps[0].observation.error_type is ErrorType.ARG_INVALID  # type: ignore[union-attr]


def test_json_is_plain_readable_json_with_tagged_actions() -> None:
    """What ``export`` writes must be usable by any JSON reader, not only by msgspec."""
    plain = json.loads(msgspec.json.encode(_episode()))
    tags = [step["action"]["type"] for step in plain["steps"]]
    assert tags == ["tool_call", "tool_call", "unparseable", "answer"]
    assert plain["steps"][0]["observation"]["error_type"] == "ArgInvalid"
    assert plain["steps"][1]["reflection"] == {
        "error_type": "ArgInvalid",
        "evidence": "cannot parse expression '17*/23'",
        "fix_plan": "remove the stray slash",
    }
    assert plain["steps"][3]["observation"] is None
    assert plain["messages"][1]["content"] == "What is 17*23? ünïcödé ✓"


def test_decoding_checks_types() -> None:
    plain = json.loads(msgspec.json.encode(_episode()))
    plain["status"] = "finished"  # not an EpisodeStatus
    with pytest.raises(msgspec.ValidationError, match="status"):
        msgspec.json.decode(json.dumps(plain), type=Episode)
    plain["status"] = "answered"
    plain["steps"][0]["observation"]["error_type"] = "Oops"  # not in the taxonomy
    with pytest.raises(msgspec.ValidationError, match="error_type"):
        msgspec.json.decode(json.dumps(plain), type=Episode)


def test_steps_are_frozen() -> None:
    step = _episode().steps[0]
    with pytest.raises(AttributeError):
        step.index = 5  # type: ignore[misc]


# -- derived properties -------------------------------------------------------------------------------------


def _step(action: ToolCall | Answer | Unparseable, observation: Observation | None) -> Step:
    return Step(
        index=0, prompt_messages=2, completion=Completion(text="..."), action=action, observation=observation
    )


@pytest.mark.parametrize(
    ("step", "failed"),
    [
        (_step(ToolCall("add", {}), Observation(ok=False, content="x", error_type=ErrorType.TIMEOUT)), True),
        (_step(ToolCall("add", {}), Observation(ok=True, content="3", output=3)), False),
        (_step(Unparseable("no tag"), None), True),  # unparseable fails even with no observation
        (_step(Unparseable("no tag"), Observation(ok=False, content="x")), True),
        (_step(Answer("3"), None), False),
        (_step(ToolCall("add", {}), None), False),  # nothing ran yet, so nothing failed
    ],
    ids=["tool-failed", "tool-ok", "unparseable", "unparseable-observed", "answer", "not-run"],
)
def test_step_failed(step: Step, failed: bool) -> None:
    assert step.failed is failed


def test_episode_has_failure() -> None:
    ok_step = _step(ToolCall("add", {}), Observation(ok=True, content="3"))
    bad_step = _step(ToolCall("add", {}), Observation(ok=False, content="x"))
    base = Episode(trace_id="t", task="q", started_at=0.0, model="m")
    assert not base.has_failure
    assert not msgspec.structs.replace(base, steps=[ok_step, _step(Answer("3"), None)]).has_failure
    assert msgspec.structs.replace(base, steps=[ok_step, bad_step]).has_failure
    assert msgspec.structs.replace(base, status="error").has_failure  # even with no failed step
    assert _episode().has_failure


def test_episode_reward_is_the_latest_reward_given() -> None:
    episode = Episode(trace_id="t", task="q", started_at=0.0, model="m")
    assert episode.reward is None
    episode.feedback.append(Feedback(answer="391"))  # a reference answer alone is not a reward
    assert episode.reward is None
    episode.feedback.append(Feedback(reward=0.0))
    episode.feedback.append(Feedback(reward=0.75))
    episode.feedback.append(Feedback(answer="392"))
    assert episode.reward == 0.75


def test_mutable_defaults_are_not_shared_between_episodes() -> None:
    first = Episode(trace_id="a", task="q", started_at=0.0, model="m")
    second = Episode(trace_id="b", task="q", started_at=0.0, model="m")
    first.messages.append(Message("user", "hi"))
    first.usage.steps += 1
    first.metadata["k"] = 1
    assert second.messages == [] and second.usage.steps == 0 and second.metadata == {}
