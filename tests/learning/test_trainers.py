"""The three trainers end to end on the real SmolLM2, with tiny budgets: SFT, ReGRPO, trajectory GRPO."""

from __future__ import annotations

import json

import pytest
import torch
from rl_helpers import CALCULATOR, SYSTEM, TARGET, calculator_point

from regrpo.errors import ErrorType, InputError
from regrpo.learning.records import SFTExample
from regrpo.learning.regrpo import ReGRPOConfig, train_regrpo
from regrpo.learning.sft import SFTConfig, train_sft
from regrpo.learning.telemetry import read_metrics
from regrpo.tools import Toolbox
from regrpo.traces.schema import Message

pytestmark = pytest.mark.slow


def test_sft_teaches_a_target_turn_and_only_the_target_turn_is_trained(smollm, tmp_path):
    example = SFTExample(
        messages=[
            Message("system", SYSTEM),
            Message("user", "What is 17 * 23?"),
            Message("assistant", TARGET),
        ],
        train_turns=[2],
        kind="reference",
    )
    config = SFTConfig(epochs=6, batch_size=1, learning_rate=3e-3, seed=1)
    report = train_sft(smollm, [example], config, tmp_path / "sft", progress=False)
    assert report.steps == 6 and report.samples == 1
    assert report.losses[-1] < report.losses[0] / 4
    metrics = read_metrics(tmp_path / "sft")  # issue 11 (15): one record per optimizer step
    assert [m["step"] for m in metrics] == [1, 2, 3, 4, 5, 6]
    assert [m["loss"] for m in metrics] == pytest.approx(report.losses)
    assert all(m["grad_norm"] > 0 and m["entropy"] > 0 and m["tokens_per_s"] > 0 for m in metrics)
    rates = [m["learning_rate"] for m in metrics]
    assert rates[0] == pytest.approx(3e-3) and rates[-1] < rates[0]  # cosine decay
    assert any((tmp_path / "sft" / "tensorboard").iterdir())  # event files beside the JSONL
    assert smollm.adapters == []  # the trainee is taken out again
    smollm.load_adapter("sft", str(tmp_path / "sft"))
    try:
        smollm.activate_adapter("sft")
        (completion,) = smollm.generate(example.messages[:2], max_new_tokens=40, stop=["</tool_call>"])
    finally:
        smollm.activate_adapter(None)
        smollm.unload_adapter("sft")
    assert completion.text.strip() == TARGET


def test_sft_refuses_an_example_set_without_the_chosen_kinds(smollm, tmp_path):
    example = SFTExample(
        messages=[Message("user", "q"), Message("assistant", "a")], train_turns=[1], kind="rot"
    )
    with pytest.raises(InputError, match="no SFT examples"):
        train_sft(smollm, [example], SFTConfig(kinds=("reference",)), tmp_path / "x", progress=False)


def test_regrpo_round_samples_executes_scores_and_saves(smollm, tmp_path):
    point = calculator_point()
    config = ReGRPOConfig(group_size=3, max_new_tokens=24, groups_per_step=1, seed=2)
    report = train_regrpo(smollm, [point, point], config, tmp_path / "rl", tools=CALCULATOR, progress=False)
    assert report.groups == 2 and report.rollouts == 6
    assert report.steps == report.groups - report.skipped_zero_variance
    assert report.generated_tokens > 0 and (tmp_path / "rl" / "adapter_model.safetensors").is_file()
    assert smollm.adapters == []
    metrics = read_metrics(tmp_path / "rl")
    assert len(metrics) == report.steps
    for m in metrics:
        assert set(m) >= {"loss", "policy_loss", "kl", "entropy", "clip_fraction", "grad_norm"}
        assert set(m) >= {"reward_mean", "reward_spread", "skipped_groups", "truncation_rate", "tokens_per_s"}
        assert 0 <= m["truncation_rate"] <= 1 and 0 <= m["clip_fraction"] <= 1 and m["kl"] >= 0
        assert m["reward_spread"] >= config.min_reward_spread  # only groups worth a step train
        assert m["anchor_completions"] % config.group_size == 0  # skipped groups ride along whole
    capped = ReGRPOConfig(group_size=3, max_new_tokens=8, max_rollouts=3, seed=2)
    assert (
        train_regrpo(smollm, [point] * 3, capped, tmp_path / "rl2", tools=CALCULATOR, progress=False).rollouts
        == 3
    )


class ChatCounter:
    """ASGI wrapper that counts the chat requests reaching the real server, and their ``n``."""

    def __init__(self, app) -> None:
        self.app, self.ns = app, []

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != "/v1/chat/completions":
            return await self.app(scope, receive, send)
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.ns.append(json.loads(body)["n"])
        sent = False

        async def replay():
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def test_regrpo_samples_through_a_serving_engine_and_only_trains_here(smollm, tmp_path):
    from regrpo.agent.local import LocalPolicy
    from regrpo.agent.openai_policy import OpenAIPolicy
    from regrpo.learning.regrpo import sample_group
    from regrpo.learning.replay import BranchEnvironment
    from regrpo.server.model_server import build_model_app, running_server

    trainee = LocalPolicy()  # the trainer's own copy; the server serves the round's start (the base)
    server = ChatCounter(build_model_app(smollm))
    config = ReGRPOConfig(group_size=3, max_new_tokens=24, groups_per_step=1, seed=2, max_staleness=1)
    with running_server(server) as url:
        remote = OpenAIPolicy(f"{url}/v1", smollm.model_name)
        report = train_regrpo(
            trainee,
            [calculator_point()] * 4,
            config,
            tmp_path / "rl",
            tools=CALCULATOR,
            progress=False,
            sampler=remote,
        )
        assert server.ns == [3] * report.groups  # every group was one n=G request to the server
        assert report.rollouts == 3 * report.groups and report.stale_dropped == 0
        # one optimizer step puts the trainer max_staleness=1 past the served version: sampling stops
        assert report.steps <= 1 and report.stopped_for_staleness == (report.steps == 1)
        assert (tmp_path / "rl" / "adapter_model.safetensors").is_file() and trainee.adapters == []

        environment = BranchEnvironment(Toolbox(CALCULATOR))
        group, dropped = sample_group(
            trainee, environment, calculator_point(), config, sampler=remote, version="v0007"
        )
        assert dropped == 3 and group.completions == [] and group.advantages is None  # another version


def test_rl_on_a_bfloat16_policy_recomputes_old_logprobs_so_the_first_ratio_is_exact(smollm):
    from regrpo.agent.local import LocalPolicy
    from regrpo.learning.lora_trainer import LoraTrainer
    from regrpo.learning.policy_gradient import old_logprobs
    from regrpo.learning.sequences import rollout_sample

    messages = [Message("system", SYSTEM), Message("user", "What is 17 * 23?")]
    for policy in (smollm, LocalPolicy(dtype="bfloat16")):
        with LoraTrainer(policy) as trainer:
            (completion,) = policy.generate(messages, temperature=1.0, max_new_tokens=16, seed=3)
            samples = [rollout_sample(policy, messages, completion)]
            (old,) = old_logprobs(trainer, policy, samples, [completion])
            (fresh,) = trainer.logprobs(samples)
            sampled = torch.tensor(completion.logprobs)
            if policy.dtype == torch.float32:  # the sampler's own, already exact
                assert torch.equal(old, sampled) and torch.allclose(old, fresh, atol=1e-3)
            else:
                assert policy.dtype == torch.bfloat16
                assert torch.equal(old, fresh)  # the first update's ratio is exactly 1
                assert not torch.equal(sampled, fresh)  # bfloat16 sampling's own log-probs are not


def test_a_taken_turn_trains_beside_the_samples_with_the_trainers_own_old_logprobs(smollm, tmp_path):
    import msgspec

    from regrpo.learning.lora_trainer import LoraTrainer
    from regrpo.learning.policy_gradient import old_logprobs
    from regrpo.learning.records import TakenTurn
    from regrpo.learning.sequences import rollout_sample
    from regrpo.traces.schema import Completion

    ids = smollm.tokenizer(TARGET, add_special_tokens=False)["input_ids"]
    point = msgspec.structs.replace(calculator_point(), taken=TakenTurn(TARGET, ids, None, None))
    messages = point.messages
    with LoraTrainer(smollm) as trainer:
        (sampled,) = smollm.generate(messages, temperature=1.0, max_new_tokens=16, seed=3)
        taken = Completion(text=TARGET, token_ids=ids)  # no log-probs: this round did not sample it
        samples = [rollout_sample(smollm, messages, c) for c in (sampled, taken)]
        old_sampled, old_taken = old_logprobs(trainer, smollm, samples, [sampled, taken])
        assert torch.equal(old_sampled, torch.tensor(sampled.logprobs))  # the sampler's own
        (fresh,) = trainer.logprobs(samples[1:])
        assert torch.equal(old_taken, fresh) and len(old_taken) == len(ids)  # first ratio exactly 1
        given = [torch.zeros(len(sampled.token_ids)), torch.zeros(len(ids))]  # a sampler's reference
        remote_sampled, remote_taken = old_logprobs(
            trainer, smollm, samples, [sampled, taken], sampler_reference=given
        )
        assert remote_sampled is given[0] and torch.equal(remote_taken, fresh)  # the taken turn: own

    config = ReGRPOConfig(group_size=2, max_new_tokens=24, groups_per_step=1, seed=2)
    report = train_regrpo(smollm, [point], config, tmp_path / "rl", tools=CALCULATOR, progress=False)
    assert report.groups == 1 and report.rollouts == 2 and report.taken_turns == 1  # not a rollout
    assert report.generated_tokens <= 2 * config.max_new_tokens  # the taken turn's tokens not counted


def test_grpo_rolls_out_whole_episodes_into_the_store(smollm, store, tmp_path):
    from regrpo.learning.grpo import GRPOConfig, train_grpo
    from regrpo.tasks.suite import builtin_suite

    task = next(t for t in builtin_suite(6) if t.category == "expression")
    config = GRPOConfig(group_size=2, max_steps=1, max_new_tokens=16, seed=3)
    report = train_grpo(smollm, [task], config, tmp_path / "grpo", store=store, progress=False)
    assert report.groups == 1 and report.rollouts == 2
    episodes = [store.get(t) for t in store.trace_ids()]
    assert len(episodes) == 2 and all(e.metadata["task_id"] == task.id for e in episodes)
    assert report.steps == (0 if report.skipped_zero_variance else 1)
    assert (tmp_path / "grpo" / "adapter_config.json").is_file()


def test_grpo_stops_starting_episodes_once_the_rollout_budget_is_spent(smollm, store, tmp_path):
    from regrpo.learning.grpo import GRPOConfig, train_grpo
    from regrpo.tasks.suite import builtin_suite

    task = next(t for t in builtin_suite(6) if t.category == "expression")
    config = GRPOConfig(group_size=3, max_steps=1, max_new_tokens=16, max_rollouts=4, seed=3)
    report = train_grpo(smollm, [task, task], config, tmp_path / "grpo", store=store, progress=False)
    # Group 1: 3 one-turn episodes; group 2 stops after one more (4 turns), too few to compare.
    assert report.groups == 1 and report.rollouts == 4
    assert len(store.trace_ids()) == 4


def _rot(error: str, index: int) -> SFTExample:
    return SFTExample(
        messages=[Message(role="user", content=f"q{index}"), Message(role="assistant", content="a")],
        train_turns=[1],
        kind="rot",
        task_id=f"{error}-{index}",
        error_type=ErrorType(error),
    )


def test_stratified_rot_keeps_every_error_type_and_is_seeded():
    from regrpo.learning.sft import stratified_rot

    examples = [_rot("Timeout", i) for i in range(20)] + [_rot("ArgInvalid", i) for i in range(3)]
    taken = stratified_rot(examples, 6, seed=0)
    kinds = [e.error_type.value for e in taken]
    assert len(taken) == 6 and kinds.count("ArgInvalid") == 3 and kinds.count("Timeout") == 3
    assert [e.task_id for e in stratified_rot(examples, 6, seed=0)] == [e.task_id for e in taken]
    assert stratified_rot(examples, None, seed=0) == examples
    assert stratified_rot(examples, 100, seed=0) == examples


def test_sft_config_refuses_a_negative_rot_cap():
    with pytest.raises(InputError, match="max_rot_examples"):
        SFTConfig(max_rot_examples=-1)
