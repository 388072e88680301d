"""``LoraTrainer`` on the real SmolLM2: log-probs, masking, KL at init, one step's direction, save/load.

Every test adds an adapter to the shared ``smollm`` policy and takes it out again (``with``), so the
session's model is the base model before and after.
"""

from __future__ import annotations

import pytest
import torch

from regrpo.agent.actions import ACTION_STOP_STRINGS
from regrpo.agent.prompts import render_system_prompt
from regrpo.errors import InputError
from regrpo.learning.lora_trainer import LoraTrainer
from regrpo.learning.policy_gradient import policy_loss
from regrpo.learning.sequences import TokenSample, rollout_sample
from regrpo.tools import default_tools

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def chat():
    """A real runtime prompt with the calculator alone: short, so the tests stay cheap on CPU."""
    calculator = [t for t in default_tools() if t.name == "calculator"]
    return [
        {"role": "system", "content": render_system_prompt(calculator)},
        {"role": "user", "content": "What is 12 * 7 + 1?"},
    ]


@pytest.fixture(scope="module")
def rollouts(smollm, chat):
    torch.manual_seed(3)
    return smollm.generate(chat, n=2, temperature=1.0, max_new_tokens=12, stop=ACTION_STOP_STRINGS)


def test_trainer_log_probs_equal_the_rollout_log_probs_and_the_system_prompt_detach_is_exact_forward(
    smollm, chat, rollouts
):
    samples = [rollout_sample(smollm, chat, c) for c in rollouts]
    assert 0 < samples[0].system_tokens < len(samples[0].prompt_ids)
    with LoraTrainer(smollm) as trainer:
        detached = trainer.logprobs(samples)
        trainer.detach_system_prompt = False
        exact = trainer.logprobs(samples)
    for completion, a, b in zip(rollouts, detached, exact, strict=True):
        assert a.shape == (len(completion.token_ids),)
        assert torch.allclose(a, torch.tensor(completion.logprobs), atol=1e-4)
        assert torch.allclose(a, b, atol=1e-4)


def test_kl_is_zero_and_has_zero_gradient_with_a_fresh_adapter(smollm, chat, rollouts):
    sample = rollout_sample(smollm, chat, rollouts[0])
    with LoraTrainer(smollm) as trainer:
        (policy,) = trainer.logprobs([sample])
        (reference,) = trainer.logprobs([sample], reference=True)
        assert torch.equal(policy, reference)  # LoRA's B starts at 0: the adapter changes nothing yet

        def kl_only(_: int, logprobs: torch.Tensor) -> torch.Tensor:
            return policy_loss(
                logprobs, policy, reference, 0.0, clip_eps=0.2, beta=1.0, total_tokens=len(policy)
            )

        result = trainer.backward([sample], kl_only)
        assert result.loss == 0.0 and result.entropy > 0
        grads = [p.grad for p in trainer.parameters if p.grad is not None]
        assert grads and all(float(g.abs().max()) == 0.0 for g in grads)


def test_only_completion_tokens_carry_loss(smollm, chat, rollouts):
    """The trainer's NLL gradient equals a full-sequence cross-entropy with the prompt labelled -100."""
    sample = rollout_sample(smollm, chat, rollouts[0])
    ids = torch.tensor([sample.prompt_ids + sample.completion_ids])
    labels = ids.clone()
    labels[0, : len(sample.prompt_ids)] = -100  # the usual "masked" labels
    with LoraTrainer(smollm, detach_system_prompt=False) as trainer:
        trainer.backward([sample], lambda _, lp: -lp.mean())
        ours = [p.grad.clone() for p in trainer.parameters]
        trainer.optimizer.zero_grad(set_to_none=True)
        logits = smollm.model(input_ids=ids).logits[0, :-1].float()
        loss = torch.nn.functional.cross_entropy(logits, labels[0, 1:], ignore_index=-100)
        loss.backward()
        masked = [p.grad for p in trainer.parameters]
    assert max(float((a - b).abs().max()) for a, b in zip(ours, masked, strict=True)) < 1e-5
    assert any(float(g.abs().max()) > 0 for g in ours)


def test_one_step_raises_the_positive_completion_and_lowers_the_negative(smollm, chat, rollouts):
    samples = [rollout_sample(smollm, chat, c) for c in rollouts]
    advantages = [1.0, -1.0]
    total = sum(len(s.completion_ids) for s in samples)
    with LoraTrainer(smollm, learning_rate=1e-3) as trainer:
        before = trainer.logprobs(samples)
        reference = trainer.logprobs(samples, reference=True)

        def loss_of(i: int, logprobs: torch.Tensor) -> torch.Tensor:
            return policy_loss(
                logprobs, before[i], reference[i], advantages[i], clip_eps=0.2, beta=0.04, total_tokens=total
            )

        trainer.backward(samples, loss_of)
        trainer.step()
        after = trainer.logprobs(samples)
    assert float(after[0].sum()) > float(before[0].sum())
    assert float(after[1].sum()) < float(before[1].sum())


def test_saved_adapter_reloads_with_the_same_log_probs(smollm, chat, rollouts, tmp_path):
    sample = rollout_sample(smollm, chat, rollouts[0])
    with LoraTrainer(smollm, learning_rate=1e-3) as trainer:
        trainer.backward([sample], lambda _, lp: -lp.sum())
        trainer.step()
        (trained,) = trainer.logprobs([sample])
        trainer.save(tmp_path / "adapter")
    smollm.load_adapter("reloaded", str(tmp_path / "adapter"))
    try:
        smollm.activate_adapter("reloaded")
        served = smollm.generate(chat, n=1, max_new_tokens=6)[0]  # the serving path, adapter from disk
        with LoraTrainer(smollm, init_from=tmp_path / "adapter", name="continued") as continued:
            assert smollm.active_adapter == "continued"
            (resumed,) = continued.logprobs([sample])
            (scored,) = continued.logprobs([rollout_sample(smollm, chat, served)])
        assert smollm.active_adapter == "reloaded"  # serving resumes with the adapter it had
    finally:
        smollm.activate_adapter(None)
        smollm.unload_adapter("reloaded")
    assert torch.allclose(resumed, trained, atol=1e-4)
    assert torch.allclose(scored, torch.tensor(served.logprobs), atol=1e-4)


def test_bad_inputs_are_refused(smollm):
    with pytest.raises(InputError, match="completion token"):
        TokenSample([1, 2], [])
    with pytest.raises(InputError, match="learning_rate"):
        LoraTrainer(smollm, learning_rate=0.0)


def test_the_kl_reference_is_the_adapter_the_run_starts_from_not_the_base_model(
    smollm, chat, rollouts, tmp_path
):
    """Issue 11 (3): continuing from a warm start, KL is measured against the warm start itself."""
    sample = rollout_sample(smollm, chat, rollouts[0])
    with LoraTrainer(smollm, learning_rate=1e-3) as trainer:
        trainer.backward([sample], lambda _, lp: -lp.sum())
        trainer.step()
        (warm,) = trainer.logprobs([sample])
        trainer.save(tmp_path / "warm")
    with LoraTrainer(smollm, init_from=tmp_path / "warm", learning_rate=1e-3) as continued:
        (reference,) = continued.logprobs([sample], reference=True)
        assert torch.allclose(reference, warm, atol=1e-5)  # not the base model's log-probs
        continued.backward([sample], lambda _, lp: -lp.sum())
        continued.step()
        (moved,) = continued.logprobs([sample])
        (still,) = continued.logprobs([sample], reference=True)
        (again,) = continued.logprobs([sample])
    assert not torch.allclose(moved, warm, atol=1e-4)  # training moved the policy ...
    assert torch.allclose(still, warm, atol=1e-5)  # ... but not the reference
    assert torch.equal(moved, again)  # and the reference pass restored the trained weights


def test_log_probs_at_a_sampling_temperature_match_the_rollout(smollm, chat):
    """Issue 11 (4): a rollout at T != 1 records log-probs of softmax(logits / T); the trainer agrees."""
    torch.manual_seed(5)
    (completion,) = smollm.generate(chat, n=1, temperature=0.6, max_new_tokens=10)
    sample = rollout_sample(smollm, chat, completion)
    with LoraTrainer(smollm, temperature=0.6) as trainer:
        (tempered,) = trainer.logprobs([sample])
    with LoraTrainer(smollm) as trainer:
        (raw,) = trainer.logprobs([sample])
    assert torch.allclose(tempered, torch.tensor(completion.logprobs), atol=1e-4)
    assert not torch.allclose(raw, tempered, atol=1e-2)


def test_warmup_cosine_warms_up_then_decays_to_its_floor():
    from regrpo.learning.lora_trainer import warmup_cosine

    scale = warmup_cosine(total_steps=10, warmup_steps=2, floor=0.1)
    values = [scale(step) for step in range(10)]
    assert values[0] < values[1] < values[2] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(values[2:], values[3:], strict=False))
    assert scale(10) == pytest.approx(0.1)
    with pytest.raises(InputError, match="warmup_steps"):
        warmup_cosine(total_steps=3, warmup_steps=3)


def test_a_packed_example_scores_every_target_token_as_its_own_turn_sample_does(smollm, chat):
    """Issue 11 (13): one forward pass per multi-turn example, exact against one pass per turn."""
    from regrpo.learning.records import SFTExample
    from regrpo.learning.sequences import example_samples, pack_turns
    from regrpo.traces.schema import Message

    call = '<tool_call>{"name": "calculator", "arguments": {"expression": "12 * 7 + 1"}}</tool_call>'
    example = SFTExample(
        messages=[
            Message("system", chat[0]["content"]),
            Message("user", chat[1]["content"]),
            Message("assistant", call),
            Message("user", "<tool_response>85</tool_response>"),
            Message("assistant", "<answer>85</answer>"),
        ],
        train_turns=[2, 4],
        kind="reference",
    )
    turns = example_samples(smollm, example)
    (packed,) = pack_turns(turns)
    assert packed.loss_tokens == sum(len(t.completion_ids) for t in turns)
    with LoraTrainer(smollm) as trainer:
        per_turn = trainer.logprobs(turns)
        (together,) = trainer.logprobs([packed])
    mask = torch.tensor(packed.mask())
    assert torch.allclose(together[mask], torch.cat(per_turn), atol=1e-4)
    # a turn whose prompt does not continue the packed ids starts a sample of its own
    at = len(turns[0].prompt_ids)  # the first target token, as turn 1's prompt repeats it
    changed = turns[1].prompt_ids[:at] + [turns[1].prompt_ids[at] + 1] + turns[1].prompt_ids[at + 1 :]
    other = TokenSample(changed, turns[1].completion_ids, turns[1].system_tokens)
    assert len(pack_turns([turns[0], other])) == 2


def test_a_rot_target_gives_its_reflection_and_its_action_equal_shares_of_the_loss(smollm):
    """Issue 11 (13): 86 % of the old warm start's loss was reflection JSON; the action was starved."""
    from regrpo.learning.sequences import balanced_weights, target_ids

    reflection = (
        '<reflection>{"error_type": "UnknownTool", "evidence": "unknown tool calculater", '
        '"fix_plan": "call the calculator tool instead"}</reflection>\n'
    )
    action = '<tool_call>{"name": "calculator", "arguments": {"expression": "17 * 23"}}</tool_call>'
    ids = target_ids(smollm, reflection + action)
    weights = balanced_weights(smollm, reflection + action, ids)
    assert weights is not None and len(weights) == len(ids)
    assert sum(weights) == pytest.approx(len(ids))  # the turn's total weight is unchanged
    n_reflection = sum(1 for w in weights if w == weights[0])
    assert sum(weights[:n_reflection]) == pytest.approx(sum(weights[n_reflection:]))  # equal shares
    reflection_ids = smollm.tokenizer(reflection, add_special_tokens=False)["input_ids"]
    assert abs(n_reflection - len(reflection_ids)) <= 1  # the split falls at the block's end
    assert balanced_weights(smollm, action, target_ids(smollm, action)) is None  # no block: uniform
