"""Data-parallel SFT with torch.distributed (gloo, 2 CPU processes): the same update as one process.

The model is a tiny randomly initialised Llama with SmolLM2's real tokenizer and chat template (a
step takes milliseconds), saved as an ordinary Hugging Face folder that ``LocalPolicy`` loads; the
ranks are real processes joined by a real gloo process group on loopback, launched with the
environment ``torchrun`` sets (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``).
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


def _launch(world: int, args: list[str]) -> list[subprocess.CompletedProcess[str]]:
    """Run ``TRAIN`` as ``world`` ranks at once, as torchrun would; each one's output."""
    port = str(_free_port())
    ranks = [
        subprocess.Popen(
            [sys.executable, "-c", TRAIN, *args],
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
