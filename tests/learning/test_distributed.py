"""Data-parallel SFT and RL with torch.distributed (gloo, 2 CPU processes): the same update as one process.

The SFT and policy-gradient step tests use a tiny randomly initialised Llama with SmolLM2's real
tokenizer and chat template (a step takes milliseconds), saved as an ordinary Hugging Face folder
that ``LocalPolicy`` loads; the ReGRPO round tests use the real SmolLM2 from the shipped warm start
(a random model, or the base one, never writes the fixing call at this point, so its groups would
have no reward spread and no step). The ranks are real processes
joined by a real gloo process group on loopback, launched with the environment ``torchrun`` sets
(``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``), each on one thread so that two runs
of the same seed sample the same tokens.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import msgspec
import pytest
import torch
from safetensors.torch import load_file

from regrpo.learning.records import SFTExample
from regrpo.traces.schema import Message

pytestmark = pytest.mark.slow

TRAIN = textwrap.dedent(
    """
    import os, signal, sys
    import msgspec
    from regrpo.agent.local import LocalPolicy
    from regrpo.learning.distributed import init_from_environment
    from regrpo.learning.lora_trainer import LoraSettings
    from regrpo.learning.records import SFTExample
    from regrpo.learning.sft import SFTConfig, train_sft

    import torch
    torch.set_num_threads(1)
    model, examples, out, batch_size, die = sys.argv[1:6]
    place = init_from_environment(timeout_s=60)
    if die == str(place.rank):
        os.kill(os.getpid(), signal.SIGKILL)  # this rank dies once the group is up
    examples = msgspec.json.decode(open(examples, "rb").read(), type=list[SFTExample])
    config = SFTConfig(epochs=1, batch_size=int(batch_size), learning_rate=5e-2, seed=3,
                       lora=LoraSettings(rank=4, alpha=8), warmup_fraction=0.0)
    report = train_sft(LocalPolicy(model), examples, config, out, progress=False)
    print("steps", report.steps, "rank", place.rank, "of", place.world, flush=True)
    """
)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, smollm) -> Path:
    """A 1-layer Llama with SmolLM2's tokenizer and chat template, as a Hugging Face folder."""
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny-llama")
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
        if (smollm.model_dir / name).is_file():
            shutil.copy(smollm.model_dir / name, folder / name)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(smollm.tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def examples_file(tmp_path_factory) -> Path:
    examples = [
        SFTExample(
            messages=[
                Message("system", "You are an agent."),
                Message("user", f"What is {a} * {b}?"),
                Message("assistant", f"<answer>{a * b}</answer>"),
            ],
            train_turns=[2],
            kind="reference",
        )
        for a, b in [(17, 23), (4, 9), (12, 12), (7, 81), (3, 5), (6, 44), (9, 9), (2, 31)]
    ]
    path = tmp_path_factory.mktemp("data") / "examples.json"
    path.write_bytes(msgspec.json.encode(examples))
    return path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _launch(world: int, args: list[str], script: str = TRAIN) -> list[subprocess.CompletedProcess[str]]:
    """Run ``script`` as ``world`` ranks at once, as torchrun would; each one's output."""
    port = str(_free_port())
    ranks = [
        subprocess.Popen(
            [sys.executable, "-c", script, *args],
            env=os.environ
            | {"RANK": str(r), "WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(world)
    ]
    done = []
    for rank in ranks:
        out, err = rank.communicate(timeout=300)
        done.append(subprocess.CompletedProcess(rank.args, rank.returncode, out, err))
    return done


def test_two_ranks_of_batch_b_take_the_same_step_as_one_process_of_batch_2b(
    tiny_model, examples_file, tmp_path
):
    (alone,) = _launch(1, [str(tiny_model), str(examples_file), str(tmp_path / "one"), "4", "-"])
    assert alone.returncode == 0, alone.stderr
    pair = _launch(2, [str(tiny_model), str(examples_file), str(tmp_path / "two"), "2", "-"])
    assert [p.returncode for p in pair] == [0, 0], pair[0].stderr + pair[1].stderr
    assert "steps 2 rank 0 of 1" in alone.stdout and "steps 2 rank 0 of 2" in pair[0].stdout

    one = load_file(str(tmp_path / "one" / "adapter_model.safetensors"))
    two = load_file(str(tmp_path / "two" / "adapter_model.safetensors"))
    assert one.keys() == two.keys()
    assert any(v.abs().max() > 0 for k, v in one.items() if "lora_B" in k)  # it trained
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-6)
    # only rank 0 wrote files; the other rank's metrics never clobbered them
    assert (tmp_path / "two" / "metrics.jsonl").read_text().count("\n") == 2


def test_a_killed_rank_fails_the_job_with_an_error_and_no_adapter(tiny_model, examples_file, tmp_path):
    survivor, killed = _launch(2, [str(tiny_model), str(examples_file), str(tmp_path / "out"), "2", "1"])
    assert killed.returncode == -9
    assert survivor.returncode != 0 and "Error" in survivor.stderr
    assert not (tmp_path / "out" / "adapter_model.safetensors").exists()


# -- RL ------------------------------------------------------------------------------------------------

PG_STEP = textwrap.dedent(
    """
    import sys
    import torch
    torch.set_num_threads(1)
    from regrpo.agent.local import LocalPolicy
    from regrpo.learning.distributed import init_from_environment
    from regrpo.learning.lora_trainer import LoraSettings, LoraTrainer
    from regrpo.learning.policy_gradient import policy_gradient_steps
    from regrpo.traces.schema import Message

    model, out = sys.argv[1:3]
    place = init_from_environment(timeout_s=60)
    policy = LocalPolicy(model)
    trainer = LoraTrainer(policy, LoraSettings(rank=4, alpha=8), learning_rate=5e-2, seed=3)
    # every process samples the same four completions (seeded), then trains on its share of them
    prompts = [[Message("user", f"What is {a} * 7?")] for a in (3, 11)]
    completions = [
        c for p in prompts for c in policy.generate(p, n=2, temperature=1.0, max_new_tokens=6, seed=5)
    ]
    rollouts = [(prompts[i // 2], c, a) for i, (c, a) in enumerate(zip(completions, [1.0, -0.6, 0.9, -0.2]))]
    metrics = policy_gradient_steps(trainer, policy, place.shard(rollouts), clip_eps=0.2, beta=0.04)
    if place.main:
        trainer.save(out)
        print("loss", metrics["loss"], "kl", metrics["kl"], flush=True)
    """
)

ROUND = textwrap.dedent(
    """
    import sys
    import msgspec
    import torch
    torch.set_num_threads(1)
    from regrpo.agent.adapters import WARM_START_DIR
    from regrpo.agent.local import LocalPolicy
    from regrpo.learning.distributed import init_from_environment
    from regrpo.learning.records import BranchPoint
    from regrpo.learning.regrpo import ReGRPOConfig, train_regrpo
    from regrpo.tools import default_tools

    model, points, out = sys.argv[1:4]
    place = init_from_environment(timeout_s=120)
    points = msgspec.json.decode(open(points, "rb").read(), type=list[BranchPoint])
    config = ReGRPOConfig(group_size=3, max_new_tokens=48, groups_per_step=1, seed=2)
    calculator = [t for t in default_tools() if t.name == "calculator"]
    report = train_regrpo(
        LocalPolicy(model), points, config, out, init_from=WARM_START_DIR, tools=calculator, progress=False
    )
    print("report", msgspec.json.encode(report).decode(), flush=True)
    """
)


def _report(run: subprocess.CompletedProcess[str]) -> dict:
    line = next(line for line in run.stdout.splitlines() if line.startswith("report "))
    return msgspec.json.decode(line.removeprefix("report "))


def test_a_policy_gradient_step_on_two_ranks_of_half_the_rollouts_is_the_step_on_all_of_them(
    tiny_model, tmp_path
):
    (alone,) = _launch(1, [str(tiny_model), str(tmp_path / "one")], PG_STEP)
    assert alone.returncode == 0, alone.stderr
    pair = _launch(2, [str(tiny_model), str(tmp_path / "two")], PG_STEP)
    assert [p.returncode for p in pair] == [0, 0], pair[0].stderr + pair[1].stderr
    # the token-mean is over both ranks' tokens: the same loss, the same update
    assert pair[0].stdout.split()[::2] == alone.stdout.split()[::2] == ["loss", "kl"]
    for two_ranks, one_process in zip(pair[0].stdout.split()[1::2], alone.stdout.split()[1::2], strict=True):
        assert float(two_ranks) == pytest.approx(float(one_process), rel=1e-5, abs=1e-9)
    one = load_file(str(tmp_path / "one" / "adapter_model.safetensors"))
    two = load_file(str(tmp_path / "two" / "adapter_model.safetensors"))
    assert any(v.abs().max() > 0 for k, v in one.items() if "lora_B" in k)  # it trained
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-6)


@pytest.fixture(scope="module")
def points_file(tmp_path_factory) -> Path:
    from rl_helpers import calculator_point

    path = tmp_path_factory.mktemp("points") / "points.json"
    path.write_bytes(msgspec.json.encode([calculator_point()]))
    return path


def test_a_rank_with_no_points_joins_every_step_and_changes_nothing(smollm, points_file, tmp_path):
    """One point on two ranks: rank 1 has none, so it must take each of rank 0's steps with zero
    gradients (not leave rank 0 waiting in the all-reduce), and the round equals rank 0 alone."""
    model = str(smollm.model_dir)
    (alone,) = _launch(1, [model, str(points_file), str(tmp_path / "one")], ROUND)
    assert alone.returncode == 0, alone.stderr
    pair = _launch(2, [model, str(points_file), str(tmp_path / "two")], ROUND)
    assert [p.returncode for p in pair] == [0, 0], pair[0].stderr + pair[1].stderr

    solo, first, second = _report(alone), _report(pair[0]), _report(pair[1])
    assert solo["steps"] == 1, solo  # the seeded group has reward spread: one step to match
    assert first["steps"] == second["steps"] == solo["steps"]
    for field in ("groups", "rollouts", "generated_tokens", "skipped_zero_variance", "mean_reward"):
        assert first[field] == second[field] == solo[field], field  # summed over ranks, the same on each
    one = load_file(str(tmp_path / "one" / "adapter_model.safetensors"))
    two = load_file(str(tmp_path / "two" / "adapter_model.safetensors"))
    assert any(v.abs().max() > 0 for k, v in one.items() if "lora_B" in k)
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-6)
    assert (tmp_path / "two" / "metrics.jsonl").read_text().count("\n") == solo["steps"]


def test_two_busy_ranks_split_the_points_and_the_budget_and_report_the_sum(smollm, tmp_path):
    from rl_helpers import calculator_point

    points = tmp_path / "points.json"
    points.write_bytes(msgspec.json.encode([calculator_point()] * 4))
    pair = _launch(2, [str(smollm.model_dir), str(points), str(tmp_path / "out")], ROUND)
    assert [p.returncode for p in pair] == [0, 0], pair[0].stderr + pair[1].stderr
    first, second = _report(pair[0]), _report(pair[1])
    assert first == {**second, "seconds": first["seconds"]}  # one report, whichever rank says it
    assert first["groups"] == 4 and first["rollouts"] == 12  # two points a rank, three samples each
    trainable = first["groups"] - first["skipped_zero_variance"]
    assert (first["steps"] == 0) == (trainable == 0) and first["steps"] <= trainable
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "out" / "metrics.jsonl").read_text().count("\n") == first["steps"]


GRPO = textwrap.dedent(
    """
    import sys
    import msgspec
    import torch
    torch.set_num_threads(1)
    from regrpo.agent.adapters import WARM_START_DIR
    from regrpo.agent.local import LocalPolicy
    from regrpo.learning.distributed import init_from_environment
    from regrpo.learning.grpo import GRPOConfig, train_grpo
    from regrpo.tasks.suite import builtin_suite
    from regrpo.traces import TraceStore

    model, store, out = sys.argv[1:4]
    place = init_from_environment(timeout_s=120)
    task = next(t for t in builtin_suite(6) if t.category == "expression")
    config = GRPOConfig(group_size=2, max_steps=1, max_new_tokens=16, max_rollouts=5, seed=3)
    with TraceStore(store) as traces:
        policy = LocalPolicy(model)
        report = train_grpo(
            policy, [task] * 3, config, out, store=traces, init_from=WARM_START_DIR, progress=False
        )
    print("report", msgspec.json.encode(report).decode(), flush=True)
    """
)


def test_grpo_ranks_split_tasks_and_budget_unevenly_and_finish_together(smollm, tmp_path):
    """Three tasks and 5 turns on two ranks: rank 0 has two tasks and 3 turns (its second group
    gets one episode, too few: it is done), rank 1 one task and 2 turns; both stop together."""
    from regrpo.tasks.suite import builtin_suite
    from regrpo.traces import TraceStore

    builtin_suite(6)  # made once here, so the two ranks only read it
    store = tmp_path / "traces.sqlite"
    pair = _launch(2, [str(smollm.model_dir), str(store), str(tmp_path / "out")], GRPO)
    assert [p.returncode for p in pair] == [0, 0], pair[0].stderr + pair[1].stderr
    first, second = _report(pair[0]), _report(pair[1])
    assert first["steps"] == second["steps"] and first["rollouts"] == second["rollouts"] == 5
    assert first["groups"] == second["groups"] == 2
    assert (first["steps"] == 0) == (first["skipped_zero_variance"] == 2)
    with TraceStore(store) as traces:
        assert len(traces.trace_ids()) == 5  # both ranks' rollout episodes, in one store
    assert (tmp_path / "out" / "adapter_config.json").is_file()
