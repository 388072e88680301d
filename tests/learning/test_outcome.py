"""The outcome term: a continuation carried on to an answer with the runtime's own turns, then verified.

The roll-outs here are driven by a ScriptedPolicy (a Policy-protocol test double, so each turn is
known) over the real calculator tool; one test runs a real ReGRPO group on SmolLM2 with the term on.
"""

from __future__ import annotations

import asyncio

import pytest

from regrpo.agent.actions import parse_action
from regrpo.agent.prompts import render_system_prompt
from regrpo.agent.scripted import ScriptedPolicy
from regrpo.agent.trigger import ReflectionTrigger
from regrpo.agent.turn import user_turn
from regrpo.errors import InputError
from regrpo.learning.outcome import remaining_turns, roll_out
from regrpo.learning.records import BranchPoint
from regrpo.learning.replay import BranchEnvironment, observation_of
from regrpo.learning.rewards import RewardWeights, score_continuation
from regrpo.tasks.schema import AnswerSpec
from regrpo.tools import Toolbox, ToolContext, default_tools
from regrpo.tools.images import ImageStore
from regrpo.traces.schema import Message, ToolCall

CALCULATOR = [t for t in default_tools() if t.name == "calculator"]
BAD = ToolCall("calculater", {"expression": "17 * 23 + 1"})
FIX = '<tool_call>{"name": "calculator", "arguments": {"expression": "17 * 23 + 1"}}</tool_call>'
REPEAT = FIX.replace("calculator", "calculater")


ANSWER = AnswerSpec("number", 392.0)


def failure_point(answer: AnswerSpec | None = ANSWER) -> BranchPoint:
    """After a misspelt tool name (a real Toolbox failure), asked 17 * 23 + 1."""
    toolbox = Toolbox(CALCULATOR)
    outcome = asyncio.run(toolbox.call(BAD.name, BAD.arguments, ToolContext(images=ImageStore())))
    observation = observation_of(outcome)
    text, _ = user_turn(observation, BAD, ReflectionTrigger(), [])
    return BranchPoint(
        id="p",
        task_id="t",
        messages=[
            Message("system", render_system_prompt(CALCULATOR)),
            Message("user", "What is 17 * 23 + 1?"),
            Message("assistant", REPEAT),
            Message("user", text),
        ],
        images=[],
        replay=[],
        failed=True,
        error_type=observation.error_type,
        observation=observation.content,
        failed_action=BAD,
        target=ToolCall("calculator", {"expression": "17 * 23 + 1"}),
        expects=["392"],
        answer=answer,
    )


async def _roll(policy: ScriptedPolicy, point: BranchPoint, continuation: str, max_steps: int):
    environment = BranchEnvironment(Toolbox(CALCULATOR))
    action = parse_action(continuation)
    if isinstance(action, ToolCall):
        execution = await environment.execute(point, action)
        observation, context = execution.observation, execution.context
    else:
        observation, context = None, await environment.context(point)
    return await roll_out(
        policy,
        environment.toolbox,
        point,
        continuation,
        action,
        observation,
        context,
        max_steps=max_steps,
        max_new_tokens=64,
    )


def test_a_fix_that_leads_to_the_right_answer_is_solved_and_the_policy_saw_the_runtime_turn():
    seen: list[list[dict[str, str]]] = []

    def answer(chat: list[dict[str, str]]) -> str:
        seen.append(chat)
        return "<answer>392</answer>"

    reached = asyncio.run(_roll(ScriptedPolicy([answer]), failure_point(), FIX, max_steps=6))
    assert (reached.answer, reached.solved, reached.turns) == ("392", True, 1)
    (chat,) = seen
    assert chat[-2] == {"role": "assistant", "content": FIX}
    assert chat[-1]["role"] == "user" and "392" in chat[-1]["content"]  # the tool's real output
    assert "Reflect first" not in chat[-1]["content"]  # a call that worked asks for no reflection


def test_a_wrong_answer_after_the_fix_is_not_solved():
    reached = asyncio.run(_roll(ScriptedPolicy(["<answer>391</answer>"]), failure_point(), FIX, max_steps=6))
    assert reached.answer == "391" and not reached.solved


def test_repeating_the_failed_call_runs_out_of_turns_and_each_failure_asks_for_a_reflection():
    seen: list[list[dict[str, str]]] = []

    def repeat(chat: list[dict[str, str]]) -> str:
        seen.append(chat)
        return REPEAT

    point = failure_point()
    reached = asyncio.run(_roll(ScriptedPolicy([repeat], cycle=True), point, REPEAT, max_steps=4))
    # 1 turn before the point + the continuation leave 2 of 4 turns to roll out
    assert remaining_turns(point, 4) == 2 and len(seen) == 2
    assert (reached.answer, reached.solved, reached.turns) == (None, False, 2)
    assert all("Reflect first" in chat[-1]["content"] for chat in seen)  # as the runtime asks


def test_a_continuation_that_answers_is_scored_without_a_roll_out():
    policy = ScriptedPolicy(["<answer>never asked</answer>"])
    reached = asyncio.run(_roll(policy, failure_point(), "<answer>392</answer>", max_steps=6))
    assert (reached.solved, reached.turns, policy.calls) == (True, 0, 0)


def test_no_turns_left_means_not_solved_unless_the_continuation_answered():
    point = failure_point()
    assert remaining_turns(point, 2) == 0
    policy = ScriptedPolicy(["<answer>392</answer>"])
    assert not asyncio.run(_roll(policy, point, FIX, max_steps=2)).solved and policy.calls == 0


def test_a_point_without_an_answer_spec_or_a_bad_budget_is_refused():
    with pytest.raises(InputError, match="no answer spec"):
        asyncio.run(_roll(ScriptedPolicy(["x"]), failure_point(answer=None), FIX, max_steps=6))
    with pytest.raises(InputError, match="max_steps"):
        remaining_turns(failure_point(), 0)


def test_the_outcome_term_adds_its_weight_only_when_solved():
    point, action = failure_point(), parse_action(FIX)
    weights = RewardWeights(outcome=0.5)
    base = score_continuation(point, action, None, None, 0, weights)
    solved = score_continuation(point, action, None, None, 0, weights, solved=True)
    unsolved = score_continuation(point, action, None, None, 0, weights, solved=False)
    assert solved.reward == pytest.approx(base.reward + 0.5) and unsolved.reward == base.reward
    assert (base.solved, solved.solved, unsolved.solved) == (None, True, False)


@pytest.mark.slow
def test_a_regrpo_group_with_the_outcome_term_rolls_every_continuation_out(smollm):
    from regrpo.learning.regrpo import ReGRPOConfig, sample_group

    config = ReGRPOConfig(group_size=3, max_new_tokens=32, outcome_max_steps=3, seed=2)
    environment = BranchEnvironment(Toolbox(CALCULATOR))
    group, _ = sample_group(smollm, environment, failure_point(), config)
    assert len(group.rewards) == 3 and all(r.solved is not None for r in group.rewards)
    w = config.weights
    for r in group.rewards:  # the outcome term is in the reward exactly when the roll-out solved it
        rest = w.lambda_exec * r.fixed + w.diagnosis * r.diagnosed - w.eta * r.reflection_tokens / 100
        assert r.reward == pytest.approx(
            rest - w.needless_reflection * r.needless + w.outcome * bool(r.solved)
        )
    off = ReGRPOConfig(group_size=2, max_new_tokens=16, seed=2)
    group_off, _ = sample_group(smollm, environment, failure_point(), off)
    assert all(r.solved is None for r in group_off.rewards)


@pytest.mark.slow
def test_train_regrpo_takes_the_outcome_stratify_and_anchor_flags(tmp_path):
    import json

    from regrpo.cli import main
    from regrpo.learning.records import Dataset

    Dataset(branch_points=[failure_point()]).save(tmp_path / "data")
    flags = ["--max-rollouts", "2", "--group-size", "2", "--max-new-tokens", "16", "--train-seed", "1"]
    out = tmp_path / "rl"
    command = ["train", "regrpo", "--data", str(tmp_path / "data"), "--out", str(out), *flags]
    assert main([*command, "--stratify", "--outcome-max-steps", "3", "--no-kl-anchors"]) == 0
    config = json.loads((out / "train_report.json").read_text())["config"]
    assert config["stratify"] is True and config["outcome_max_steps"] == 3
    assert config["kl_on_skipped"] is False and config["outcome_weight"] == 1.0
    assert main([*command, "--outcome-max-steps", "-1"]) == 2  # a clear one-line error, not a traceback
