"""Branch points from a user's own traffic: no suite task, no reference (issue 13, items 1 and 2).

Also wrong answers: an episode whose calls all worked but whose answer the user's feedback rejected,
and what judges answers there: a named answer, the app's own verifier, or a caller's full reward.

An app's agent (scripted policy, real image tools, real SQLite store) crops its user's image, then
makes a crop that fails, then answers. The data engine must find that failure, replay the state
from the store alone (the user's pixels were kept by hash, the first crop re-run), and judge
continuations by what can be verified: a call that now works, not the failed one repeated.
"""

from __future__ import annotations

import asyncio
import hashlib
import json

import msgspec
import numpy as np
import pytest

from regrpo import Agent, ScriptedPolicy
from regrpo.learning.data_engine import build_dataset
from regrpo.learning.replay import BranchEnvironment
from regrpo.learning.rewards import local_fix
from regrpo.learning.traffic import answered_wrong, learnable_trace_ids
from regrpo.tools import Toolbox, load_image
from regrpo.tools.image_ops import crop, rotate
from regrpo.traces.schema import Answer, ToolCall

GOOD_CROP = ToolCall("crop", {"image": "img_0", "box": [0, 0, 20, 10]})
BAD_CROP = ToolCall("crop", {"image": "img_1", "box": [50, 50, 90, 90]})  # outside the 20x10 crop


def call(action: ToolCall) -> str:
    return f"<tool_call>{json.dumps({'name': action.name, 'arguments': action.arguments})}</tool_call>"


def user_image() -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (40, 60, 3), dtype=np.uint8)


def app_agent(store, **kwargs) -> Agent:
    script = [call(GOOD_CROP), call(BAD_CROP), "<answer>5</answer>"]
    return Agent(ScriptedPolicy(script, cycle=True), tools=[crop, rotate], store=store, **kwargs)


def test_a_failed_step_of_traffic_becomes_a_replayable_branch_point_without_a_reference(store, tmp_path):
    result = app_agent(store).run("How many birds are there?", [user_image()])
    assert result.steps[1].observation is not None and not result.steps[1].observation.ok
    data = build_dataset([], store=store, image_dir=tmp_path / "images", progress=False)
    (point,) = data.branch_points
    assert point.source == "traffic" and point.target is None and point.failed
    assert point.error_type.value == "GroundingDrift" and point.failed_action == BAD_CROP
    assert point.replay == [GOOD_CROP] and point.task_id == f"trace-{result.trace_id}"
    assert point.messages == store.get(result.trace_id).messages[:6]  # what the model was shown next
    assert "Reflect first" in point.messages[-1].content
    (path,) = point.images
    pixels = load_image(path)  # the user's image, back from the store alone
    assert np.array_equal(pixels, user_image())
    assert hashlib.sha256(pixels.tobytes()).hexdigest() == store.get(result.trace_id).images[0].sha256
    assert data.counts.branch_sources == {"traffic": 1}

    environment = BranchEnvironment(Toolbox([crop, rotate]))

    def fixed(action) -> bool:
        outcome = None
        if isinstance(action, ToolCall):
            outcome = asyncio.run(environment.execute(point, action)).outcome
        return local_fix(point, action, outcome)

    assert fixed(ToolCall("crop", {"image": "img_1", "box": [0, 0, 10, 5]}))  # img_1 is the replayed crop
    assert not fixed(BAD_CROP)  # the failed call repeated: not a fix (it was no transient fault)
    assert not fixed(ToolCall("crop", {"image": "img_9", "box": [0, 0, 5, 5]}))  # still fails
    assert not fixed(Answer("5"))  # nothing to judge an answer against


def test_a_reference_answer_given_as_feedback_judges_answers(store, tmp_path):
    result = app_agent(store).run("How many birds are there?", [user_image()])
    app_agent(store).feedback(result.trace_id, answer="5")
    (point,) = build_dataset([], store=store, image_dir=tmp_path, progress=False).branch_points
    assert point.answer is not None and point.answer.kind == "number"
    assert local_fix(point, Answer("5"), None) and not local_fix(point, Answer("6"), None)


@pytest.mark.parametrize("kind", ["images not kept", "suite task"])
def test_episodes_without_their_images_or_of_suite_tasks_are_not_traffic(store, tmp_path, kind):
    if kind == "images not kept":
        app_agent(store, keep_images=False).run("How many birds?", [user_image()])
    else:  # an evaluation or suite episode: never traffic, so held-out tasks cannot leak into training
        app_agent(store).run("How many birds?", [user_image()], metadata={"task_id": "count-0-0001"})
    data = build_dataset([], store=store, image_dir=tmp_path, progress=False)
    assert data.branch_points == []
    assert data.counts.traffic_images_missing == (kind == "images not kept")
    assert data.counts.traffic_episodes == 0


@pytest.mark.slow
def test_the_data_command_mines_traffic_alone(tmp_path):
    import subprocess
    import sys

    from regrpo import TraceStore

    with TraceStore(tmp_path / "traces.sqlite") as store:
        app_agent(store).run("How many birds are there?", [user_image()])
    command = [
        sys.executable,
        "-m",
        "regrpo.cli",
        "train",
        "data",
        "--store",
        str(tmp_path / "traces.sqlite"),
    ]
    refused = subprocess.run(
        [*command, "--no-suite", "--out", str(tmp_path / "x")], capture_output=True, text=True
    )
    assert refused.returncode == 2 and "add --traces" in refused.stdout
    done = subprocess.run(
        [*command, "--traces", "--no-suite", "--out", str(tmp_path / "data")], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (line,) = (tmp_path / "data" / "branch_points.jsonl").read_text().splitlines()
    assert json.loads(line)["source"] == "traffic"
    assert len(list((tmp_path / "data" / "images").glob("*.png"))) == 1


def answering_agent(store, answer: str = "5") -> Agent:
    """An app's agent whose calls all work and which then answers ``answer``."""
    script = [call(GOOD_CROP), f"<answer>{answer}</answer>"]
    return Agent(ScriptedPolicy(script, cycle=True), tools=[crop, rotate], store=store)


def test_an_answer_the_user_says_was_wrong_becomes_a_point_at_the_answer_turn(store, tmp_path):
    agent = answering_agent(store)
    result = agent.run("How many birds are there?", [user_image()])
    assert not any(step.failed for step in result.steps)  # no failed step: invisible to failure mining
    agent.feedback(result.trace_id, reward=0.0, answer="7")
    stored = store.get(result.trace_id)
    assert answered_wrong(stored) and learnable_trace_ids(store) == [result.trace_id]

    data = build_dataset([], store=store, image_dir=tmp_path, progress=False)
    (point,) = data.branch_points
    assert point.source == "traffic" and point.target is None and not point.failed
    assert point.failed_action == Answer("5") and point.error_type is None
    assert point.messages == stored.messages[: stored.steps[-1].prompt_messages]  # the answer turn's prompt
    assert point.replay == [GOOD_CROP] and point.answer is not None and point.answer.check("7")
    assert data.counts.traffic_wrong_answers == 1

    environment = BranchEnvironment(Toolbox([crop, rotate]))
    working = ToolCall("crop", {"image": "img_1", "box": [0, 0, 10, 5]})
    outcome = asyncio.run(environment.execute(point, working)).outcome
    assert outcome.ok  # the call works, yet it is no fix where the answer was what was wrong
    assert not local_fix(point, working, outcome)
    assert local_fix(point, Answer("7"), None) and not local_fix(point, Answer("5"), None)


def test_a_wrong_answer_right_after_a_failed_step_is_not_made_twice(store, tmp_path):
    result = app_agent(store).run("How many birds are there?", [user_image()])  # fails, then answers 5
    app_agent(store).feedback(result.trace_id, answer="7")
    assert answered_wrong(store.get(result.trace_id))
    data = build_dataset([], store=store, image_dir=tmp_path, progress=False)
    (point,) = data.branch_points  # the failed step's point: its prompt is the answer turn's
    assert point.failed and point.failed_action == BAD_CROP and data.counts.traffic_wrong_answers == 0


@pytest.mark.parametrize("feedback", [{"answer": "5"}, {"reward": 0.0}, {}])
def test_a_right_answer_an_unnamed_miss_or_no_feedback_gives_no_answer_point(store, tmp_path, feedback):
    agent = answering_agent(store)
    result = agent.run("How many birds are there?", [user_image()])
    if feedback:
        agent.feedback(result.trace_id, **feedback)
    assert not answered_wrong(store.get(result.trace_id)) and learnable_trace_ids(store) == []
    data = build_dataset([], store=store, image_dir=tmp_path, trace_ids=[result.trace_id], progress=False)
    assert data.branch_points == []
    assert data.counts.traffic_wrong_unnamed == (feedback == {"reward": 0.0})  # a miss with nothing to learn


def says_seven(task: str, answer: str | None) -> float:
    """An app's verifier: 7 birds is right, 6 half right; it raises on a non-number, as a careless one
    would (importable: the trainer calls it by name)."""
    return {7: 1.0, 6: 0.5}.get(int((answer or "").strip()), 0.0)


def test_an_answer_the_apps_verifier_marked_down_is_judged_by_that_verifier(store, tmp_path):
    from regrpo.learning.judging import answer_score

    agent = answering_agent(store)  # answers 5
    result = agent.run("How many birds are there?", [user_image()], verifier=says_seven)
    assert result.reward == 0.0 and answered_wrong(store.get(result.trace_id))
    assert learnable_trace_ids(store) == [result.trace_id]
    data = build_dataset([], store=store, image_dir=tmp_path, progress=False)
    (point,) = data.branch_points
    assert point.failed_action == Answer("5") and point.answer is None
    assert point.verifier is not None and point.verifier.name.endswith(":says_seven")
    assert point.verifier.task == "How many birds are there?"
    assert (answer_score(point, "7"), answer_score(point, "6"), answer_score(point, "5")) == (1.0, 0.5, 0.0)
    assert local_fix(point, Answer("7"), None)
    assert not local_fix(point, Answer("6"), None)  # half marks are no fix
    assert data.counts.traffic_wrong_answers == 1


def test_a_verifier_judges_the_roll_outs_of_a_failed_step_and_gives_partial_credit(store, tmp_path):
    from regrpo.learning.outcome import roll_out
    from regrpo.learning.rewards import RewardWeights, score_continuation

    result = app_agent(store).run("How many birds are there?", [user_image()], verifier=says_seven)
    (point,) = build_dataset([], store=store, image_dir=tmp_path, progress=False).branch_points
    assert point.failed and point.failed_action == BAD_CROP and point.verifier is not None
    assert result.reward == 0.0

    environment = BranchEnvironment(Toolbox([crop, rotate]))
    fix = ToolCall("crop", {"image": "img_1", "box": [0, 0, 10, 5]})
    execution = asyncio.run(environment.execute(point, fix))

    def reach(answer: str):
        return asyncio.run(
            roll_out(
                ScriptedPolicy([f"<answer>{answer}</answer>"]),
                environment.toolbox,
                point,
                call(fix),
                fix,
                execution.observation,
                execution.context,
                max_steps=6,
                max_new_tokens=16,
            )
        )

    right, half = reach("7"), reach("6")
    assert (right.score, right.solved, half.score, half.solved) == (1.0, True, 0.5, False)
    weights = RewardWeights()
    base = score_continuation(point, fix, execution.outcome, None, 0, weights)
    partial = score_continuation(point, fix, execution.outcome, None, 0, weights, solved=half.score)
    assert partial.reward == pytest.approx(base.reward + 0.5 * weights.outcome)


def test_a_verifier_the_trainer_cannot_import_is_counted_and_not_used(store, tmp_path):
    def local_verifier(task: str, answer: str | None) -> float:  # <locals>: no import path reaches it
        return 0.0

    result = app_agent(store).run("How many birds are there?", [user_image()], verifier=local_verifier)
    assert answered_wrong(store.get(result.trace_id))
    data = build_dataset([], store=store, image_dir=tmp_path, progress=False)
    (point,) = data.branch_points  # the failed step's point, with nothing to judge answers
    assert point.verifier is None and point.answer is None
    assert data.counts.traffic_verifier_unresolved == 1 and data.counts.traffic_wrong_unnamed == 0


def test_a_broken_verifier_is_an_error_at_scoring_not_a_wrong_answer(store, tmp_path):
    from regrpo.learning.judging import answer_score
    from regrpo.verifier import VerifierError

    answering_agent(store).run("How many birds are there?", [user_image()], verifier=says_seven)
    (point,) = build_dataset([], store=store, image_dir=tmp_path, progress=False).branch_points
    with pytest.raises(VerifierError, match="says_seven raised ValueError"):
        answer_score(point, "a few")


def test_a_callers_full_reward_makes_the_episodes_own_answer_the_reference(store, tmp_path):
    agent = app_agent(store)  # fails a crop, recovers, answers 5
    result = agent.run("How many birds are there?", [user_image()])
    agent.feedback(result.trace_id, reward=1.0)
    (point,) = build_dataset([], store=store, image_dir=tmp_path, progress=False).branch_points
    assert point.failed and point.answer is not None and point.answer.check("5")
    assert local_fix(point, Answer("5"), None) and not local_fix(point, Answer("4"), None)


class GroupOf:
    """A sampler (the ``Policy`` protocol's ``generate``) whose n samples are given texts, in order."""

    model_name, active_adapter = "given", None

    def __init__(self, *texts: str) -> None:
        self.texts = texts

    def generate(self, messages, *, n=1, temperature=0.0, max_new_tokens=256, stop=()):
        from regrpo.traces.schema import Completion

        return [Completion(text=text, token_ids=[1, 2]) for text in self.texts[:n]]


def test_a_continuation_whose_answer_the_verifier_cannot_score_is_dropped_and_counted(store, tmp_path):
    from regrpo.learning.regrpo import ReGRPOConfig, sample_group

    answering_agent(store).run("How many birds are there?", [user_image()], verifier=says_seven)
    (point,) = build_dataset([], store=store, image_dir=tmp_path, progress=False).branch_points
    sampler = GroupOf("<answer>7</answer>", "<answer>a few</answer>", "<answer>5</answer>")
    environment = BranchEnvironment(Toolbox([crop, rotate]))
    config = ReGRPOConfig(group_size=3)
    scorer = ScriptedPolicy(["unused"])  # only counts reflection tokens here
    group, dropped = sample_group(scorer, environment, point, config, sampler=sampler, version="given")
    assert dropped == 0 and group.unscored == 1  # "a few" made says_seven raise: not a wrong answer
    assert [c.text for c in group.completions] == ["<answer>7</answer>", "<answer>5</answer>"]
    assert [r.fixed for r in group.rewards] == [True, False] and group.advantages is not None


def test_a_round_on_traffic_that_gives_no_points_says_why(store, tmp_path):
    from regrpo.errors import NothingToLearn
    from regrpo.learning.online import ReGRPORound
    from regrpo.learning.registry import AdapterRegistry
    from regrpo.learning.regrpo import ReGRPOConfig

    result = app_agent(store, keep_images=False).run("How many birds are there?", [user_image()])
    round_ = ReGRPORound(
        ScriptedPolicy(["unused"]), AdapterRegistry(tmp_path / "registry"), [], store, ReGRPOConfig()
    )
    with pytest.raises(NothingToLearn, match="1 episodes gave no branch points .*images missing 1"):
        round_.points([result.trace_id])


class TokenisingScript(ScriptedPolicy):
    """An app's scripted model whose turns carry token ids, as a real engine's do (one per word here)."""

    def generate(self, messages, **kwargs):
        return [
            msgspec.structs.replace(c, token_ids=list(range(1, 1 + self.count_tokens(c.text))))
            for c in super().generate(messages, **kwargs)
        ]


FIX_CROP = ToolCall("crop", {"image": "img_1", "box": [0, 0, 10, 5]})  # img_1: the first crop


def recovering_episode(store, policy_type=TokenisingScript) -> str:
    """Traffic that fails a crop, fixes it and answers 7, which the app's verifier gives full marks."""
    script = [call(GOOD_CROP), call(BAD_CROP), call(FIX_CROP), "<answer>7</answer>"]
    agent = Agent(policy_type(script), tools=[crop, rotate], store=store)
    result = agent.run("How many birds are there?", [user_image()], verifier=says_seven)
    assert result.reward == 1.0 and result.steps[1].failed and not result.steps[2].failed
    return result.trace_id


def test_a_traffic_point_carries_the_turn_the_model_really_took_there(store, tmp_path):
    from regrpo.learning.records import TakenTurn

    recovering_episode(store)
    data = build_dataset([], store=store, image_dir=tmp_path, progress=False)
    (point,) = data.branch_points
    assert point.failed_action == BAD_CROP
    assert point.taken == TakenTurn(
        text=call(FIX_CROP), token_ids=list(range(1, 11)), adapter=None, final_answer="7"
    )
    assert data.counts.traffic_taken_turns == 1 and data.counts.traffic_taken_untokenised == 0


def test_a_taken_turn_without_token_ids_is_left_out_and_counted(store, tmp_path):
    recovering_episode(store, policy_type=ScriptedPolicy)  # an engine that gives no token ids
    data = build_dataset([], store=store, image_dir=tmp_path, progress=False)
    (point,) = data.branch_points
    assert point.taken is None
    assert data.counts.traffic_taken_turns == 0 and data.counts.traffic_taken_untokenised == 1


def test_the_taken_turn_joins_its_group_scored_by_where_the_episode_really_ended(store, tmp_path):
    from regrpo.learning.regrpo import ReGRPOConfig, sample_group

    recovering_episode(store)
    (point,) = build_dataset([], store=store, image_dir=tmp_path, progress=False).branch_points
    environment = BranchEnvironment(Toolbox([crop, rotate]))
    sampler = GroupOf(call(BAD_CROP), call(BAD_CROP))  # the samples repeat the failed call
    scorer = ScriptedPolicy(["unused"])  # only counts reflection tokens here
    config = ReGRPOConfig(group_size=2, outcome_max_steps=2)
    group, dropped = sample_group(scorer, environment, point, config, sampler=sampler, version="given")
    assert dropped == 0 and group.taken == 1 and len(group.sampled) == 2
    assert group.completions[-1].text == call(FIX_CROP) and group.completions[-1].logprobs == []
    samples, taken = group.rewards[:2], group.rewards[-1]
    assert not any(r.fixed for r in samples) and taken.fixed
    assert taken.solved == 1.0 and [r.solved for r in samples] == [
        0.0,
        0.0,
    ]  # its episode's own answer, 7, judged
    assert group.advantages is not None and group.advantages[-1] > 0 > group.advantages[0]

    without = ReGRPOConfig(group_size=2, outcome_max_steps=2, taken_turn=False)
    alone, _ = sample_group(scorer, environment, point, without, sampler=sampler, version="given")
    assert alone.taken == 0 and len(alone.completions) == 2 and alone.advantages is None  # no spread


def test_a_replay_that_makes_other_pixels_than_the_episode_recorded_is_refused(store, tmp_path):
    from regrpo.learning.replay import ReplayError, restore

    result = app_agent(store).run("How many birds are there?", [user_image()])
    (point,) = build_dataset([], store=store, image_dir=tmp_path, progress=False).branch_points
    (made,) = point.replay_images  # what the replayed crop made when the episode ran
    assert made == store.get(result.trace_id).steps[0].images_made[0] and made.image_id == "img_1"
    toolbox = Toolbox([crop, rotate])
    assert asyncio.run(restore(point, toolbox)).images.info("img_1").width == 20  # the same pixels again

    other = msgspec.structs.replace(made, sha256="0" * 64)  # as if crop now made something else
    with pytest.raises(ReplayError, match="made img_1 .* with other pixels than it recorded"):
        asyncio.run(restore(msgspec.structs.replace(point, replay_images=[other]), toolbox))
    missing = msgspec.structs.replace(made, image_id="img_2")
    with pytest.raises(ReplayError, match="did not make img_2"):
        asyncio.run(restore(msgspec.structs.replace(point, replay_images=[made, missing]), toolbox))
