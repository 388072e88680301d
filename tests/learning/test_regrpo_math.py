"""ReGRPO's math on hand-made numbers: group advantages, zero-variance skipping, the clipped loss, KL."""

from __future__ import annotations

import math

import pytest
import torch

from regrpo.errors import InputError
from regrpo.learning.policy_gradient import group_advantages, policy_loss
from regrpo.learning.regrpo import ReGRPOConfig


def test_advantages_are_standardised_within_the_group():
    advantages = group_advantages([1.0, 0.0, 0.0, 0.0, 0.0], eps=1e-4)
    assert advantages is not None
    # mean 0.2, population std 0.4
    assert advantages[0] == pytest.approx(0.8 / 0.4001)
    assert advantages[1:] == pytest.approx([-0.2 / 0.4001] * 4)
    assert sum(advantages) == pytest.approx(0.0, abs=1e-9)


def test_reference_release_advantage_is_reward_minus_mean():
    assert group_advantages([0.5, 1.0, 0.0], normalise_std=False) == pytest.approx([0.0, 0.5, -0.5])


@pytest.mark.parametrize("rewards", [[0.0] * 5, [1.0] * 3, [-0.07, -0.07]])
def test_zero_variance_groups_are_skipped(rewards):
    assert group_advantages(rewards) is None


def test_a_group_of_one_is_refused():
    with pytest.raises(InputError, match="at least two"):
        group_advantages([1.0])


def test_on_policy_loss_is_minus_advantage_times_token_share():
    logprobs = torch.tensor([-1.0, -2.0, -0.5], requires_grad=True)
    loss = policy_loss(
        logprobs, logprobs.detach(), logprobs.detach(), 2.0, clip_eps=0.2, beta=0.04, total_tokens=6
    )
    assert float(loss.detach()) == pytest.approx(-2.0 * 3 / 6)  # ratio 1, KL 0
    loss.backward()
    assert logprobs.grad is not None
    assert logprobs.grad.tolist() == pytest.approx([-2.0 / 6] * 3)  # d(-A·ρ)/dlogp = -A·ρ, per token share


def test_clipping_stops_the_gradient_once_the_ratio_left_the_trust_region():
    old = torch.tensor([-1.0, -1.0])
    logprobs = torch.tensor([-1.0 + math.log(1.5), -1.0 + math.log(1.1)], requires_grad=True)
    loss = policy_loss(logprobs, old, logprobs.detach(), 1.0, clip_eps=0.2, beta=0.0, total_tokens=2)
    loss.backward()
    assert logprobs.grad is not None
    assert logprobs.grad[0] == 0.0  # ratio 1.5 > 1.2 with A > 0: clipped, no push further
    assert logprobs.grad[1] == pytest.approx(-1.1 / 2)


def test_kl_term_is_zero_at_the_reference_and_positive_away_from_it():
    logprobs = torch.tensor([-1.0, -3.0], requires_grad=True)
    at_ref = policy_loss(
        logprobs, logprobs.detach(), logprobs.detach(), 0.0, clip_eps=0.2, beta=1.0, total_tokens=2
    )
    assert float(at_ref.detach()) == 0.0
    at_ref.backward()
    assert logprobs.grad is not None and logprobs.grad.abs().max() == 0.0
    away = policy_loss(
        logprobs, logprobs.detach(), torch.tensor([-1.5, -2.0]), 0.0, clip_eps=0.2, beta=1.0, total_tokens=2
    )
    assert float(away.detach()) > 0.0


def test_config_refuses_settings_that_cannot_work():
    with pytest.raises(InputError, match="group_size"):
        ReGRPOConfig(group_size=1)
    with pytest.raises(InputError, match="temperature"):
        ReGRPOConfig(temperature=0.0)
    assert ReGRPOConfig().group_size == 5 and ReGRPOConfig().beta == 0.04 and ReGRPOConfig().eta == 0.1


def test_length_noise_is_not_a_learning_signal():
    """Issue 11 (2): one reflection token apart, nothing fixed, used to become advantages of ±1.6."""
    noise = [-0.024, -0.025, -0.025, -0.025, -0.025]
    assert group_advantages(noise, min_spread=ReGRPOConfig().min_reward_spread) is None
    fixed_one = [1.0 - 0.024, -0.025, -0.025, -0.025, -0.025]
    assert group_advantages(fixed_one, min_spread=ReGRPOConfig().min_reward_spread) is not None
    with pytest.raises(InputError, match="min_reward_spread"):
        ReGRPOConfig(min_reward_spread=-1.0)


def test_k3_kl_is_clamped_so_one_near_impossible_token_cannot_swamp_the_step():
    """Issue 11 (3): a token at log-prob -23 under the reference gave k3 ≈ 1e6 and a gradient of 8,741."""
    from regrpo.learning.policy_gradient import k3_kl

    logprobs = torch.tensor([-0.1, -23.0], requires_grad=True)
    reference = torch.tensor([-0.1, 0.0])  # policy finds token 2 near-impossible, the reference doesn't
    kl = k3_kl(logprobs, reference)
    assert kl.detach().tolist() == [0.0, 10.0]
    kl.sum().backward()
    assert logprobs.grad is not None and float(logprobs.grad.abs().max()) == 0.0  # clamped: no push
    small = torch.tensor([-1.0])
    assert float(k3_kl(small, torch.tensor([-1.5]))) == pytest.approx(math.exp(-0.5) + 0.5 - 1.0)


def test_the_reflection_cost_counts_the_whole_block_and_ungrounded_diagnoses_earn_nothing():
    """Issue 11 (5) and (6): count every token of the block; pay a diagnosis only when grounded."""
    from regrpo.agent.actions import reflection_block
    from regrpo.learning.regrpo import scored_reflection

    observation = "<tool_response>Error: cannot parse expression '17*/23'</tool_response>"
    grounded = (
        '<reflection>{"error_type": "ArgInvalid", "evidence": "cannot parse expression 17*/23", '
        '"fix_plan": "use 17*23"}</reflection>\n<tool_call>{"name": "calculator", '
        '"arguments": {"expression": "17*23"}}</tool_call>'
    )
    block = reflection_block(grounded)
    assert block.startswith("<reflection>") and block.endswith("</reflection>")
    words = lambda text: len(text.split())  # noqa: E731  a stand-in tokenizer: one token per word
    reflection, tokens = scored_reflection(grounded, observation, words)
    assert reflection is not None and tokens == words(block) > words('"use 17*23"')
    ungrounded = grounded.replace("cannot parse expression 17*/23", "it went wrong")
    reflection, tokens = scored_reflection(ungrounded, observation, words)
    assert reflection is None and tokens > 0  # still costs its tokens
    assert scored_reflection("<answer>391</answer>", observation, words) == (None, 0)


def _group(advantages: list[float] | None, texts: list[str]):
    from regrpo.learning.records import BranchPoint
    from regrpo.learning.regrpo import Group
    from regrpo.traces.schema import Completion, Message

    point = BranchPoint(
        id="p",
        task_id="t",
        messages=[Message("user", "q")],
        images=[],
        replay=[],
        failed=False,
        error_type=None,
        observation="",
        failed_action=None,
    )
    return Group(point, [Completion(t) for t in texts], [], advantages)


def test_a_skipped_group_anchors_the_step_at_advantage_zero():
    from regrpo.learning.regrpo import step_rollouts

    trained, skipped = _group([1.0, -1.0], ["a", "b"]), _group(None, ["c", "d", "e"])
    rollouts = step_rollouts([trained], [skipped], ReGRPOConfig())
    assert [(c.text, a) for _, c, a in rollouts] == [
        ("a", 1.0),
        ("b", -1.0),
        ("c", 0.0),
        ("d", 0.0),
        ("e", 0.0),
    ]
    # off, or with no KL to act, the skipped group is not in the step at all
    for config in (ReGRPOConfig(kl_on_skipped=False), ReGRPOConfig(beta=0.0)):
        assert [c.text for _, c, _ in step_rollouts([trained], [skipped], config)] == ["a", "b"]
    with pytest.raises(InputError, match="skipped"):
        step_rollouts([skipped], [], ReGRPOConfig())


def test_at_advantage_zero_only_the_kl_term_pulls_and_it_pulls_back_to_the_reference():
    reference = torch.tensor([-0.1, -0.2])
    drifted = torch.tensor([-2.0, -0.2], requires_grad=True)  # the first token moved away
    loss = policy_loss(drifted, drifted.detach(), reference, 0.0, clip_eps=0.2, beta=0.04, total_tokens=2)
    loss.backward()
    assert drifted.grad is not None
    assert drifted.grad[0] < 0  # descending the loss raises the drifted token's log-prob again
    assert drifted.grad[1] == 0  # a token still at the reference feels nothing
    at_reference = reference.clone().requires_grad_(True)
    policy_loss(at_reference, reference, reference, 0.0, clip_eps=0.2, beta=0.04, total_tokens=2).backward()
    assert at_reference.grad is not None and torch.count_nonzero(at_reference.grad) == 0


def test_a_negative_outcome_budget_is_refused():
    with pytest.raises(InputError, match="outcome_max_steps"):
        ReGRPOConfig(outcome_max_steps=-1)


def _point(index: int, target: str, source: str):
    from regrpo.learning.records import BranchPoint
    from regrpo.traces.schema import Message, ToolCall

    return BranchPoint(
        id=f"p{index}",
        task_id="t",
        messages=[Message("user", str(index))],
        images=[],
        replay=[],
        failed=source != "reference",
        error_type=None,
        observation="",
        failed_action=None,
        target=ToolCall(target, {}),
        source=source,  # type: ignore[arg-type]
    )


def test_a_stratified_round_sees_every_kind_of_decision_first_and_every_point_once():
    from regrpo.learning.regrpo import point_order

    # 20 ocr retries, 2 count clean points, 1 calculator near-miss: a shuffle's first 3 are mostly ocr
    points = [_point(i, "ocr", "fault") for i in range(20)]
    points += [
        _point(20, "count", "reference"),
        _point(21, "count", "reference"),
        _point(22, "calculator", "near_miss"),
    ]
    order = point_order(points, ReGRPOConfig(stratify=True, seed=3))
    assert sorted(p.id for p in order) == sorted(p.id for p in points)
    assert {(p.target.name, p.source) for p in order[:3]} == {  # type: ignore[union-attr]
        ("ocr", "fault"),
        ("count", "reference"),
        ("calculator", "near_miss"),
    }
    assert point_order(points, ReGRPOConfig(stratify=True, seed=3)) == order  # seeded
    twice = point_order(points, ReGRPOConfig(stratify=True, epochs=2))
    assert len(twice) == 2 * len(points)
    plain = point_order(points, ReGRPOConfig(seed=3))
    assert sorted(p.id for p in plain) == sorted(p.id for p in points) and plain != points
