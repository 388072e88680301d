"""Hot-swap on the real SmolLM2: memory, disk and in-place loads agree; a swap between steps takes effect."""

from __future__ import annotations

import shutil

import pytest
import torch

from regrpo.agent.actions import ACTION_STOP_STRINGS
from regrpo.agent.loop import Agent
from regrpo.errors import AdapterError
from regrpo.learning.hotswap import AdapterWeights, swap_in, swap_to_base
from regrpo.learning.lora_trainer import LoraSettings, save_random_adapter
from regrpo.learning.registry import AdapterMeta, AdapterRegistry
from regrpo.tools.calculator import calculator

pytestmark = pytest.mark.slow

CHAT = [{"role": "user", "content": "What is 17 times 23?"}]


def tensors_of(folder) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def config_of(folder):
    from peft import LoraConfig

    return LoraConfig.from_pretrained(str(folder))


@pytest.fixture(scope="module")
def loras(smollm, tmp_path_factory):
    assert smollm.adapters == []
    root = tmp_path_factory.mktemp("loras")
    for name, seed, rank in (("a", 1, 16), ("b", 2, 16), ("r8", 3, 8)):
        save_random_adapter(smollm.model, root / name, LoraSettings(rank=rank), seed=seed)
    return root


@pytest.fixture
def policy(smollm):
    """The shared SmolLM2, handed back with no adapter loaded whatever the test did."""
    yield smollm
    smollm.activate_adapter(None)
    for name in smollm.adapters:
        smollm.unload_adapter(name)


def last_logits(policy) -> torch.Tensor:
    ids = torch.tensor([policy.encode_chat(CHAT)], device=policy.device)
    with torch.inference_mode():
        return policy.model(ids).logits[0, -1].float()


def test_memory_disk_and_in_place_loads_give_the_same_logits(policy, loras):
    base = last_logits(policy)
    policy.load_adapter("disk", str(loras / "a"))
    policy.activate_adapter("disk")
    from_disk = last_logits(policy)
    assert (from_disk - base).abs().max() > 1e-2  # the adapter really changes the model

    policy.load_adapter_weights("memory", config_of(loras / "a"), tensors_of(loras / "a"))
    policy.activate_adapter("memory")
    torch.testing.assert_close(last_logits(policy), from_disk, atol=1e-5, rtol=0)

    # b is active; overwrite it in place with a's tensors: same function as a, new name, same slot count
    policy.load_adapter("b", str(loras / "b"))
    policy.activate_adapter("b")
    assert (last_logits(policy) - from_disk).abs().max() > 1e-2
    policy.replace_adapter_weights("b", "a-in-place", tensors_of(loras / "a"))
    assert policy.active_adapter == "a-in-place" and "b" not in policy.adapters
    torch.testing.assert_close(last_logits(policy), from_disk, atol=1e-5, rtol=0)

    # the renamed adapter behaves like any other: switch away, back, unload
    policy.activate_adapter(None)
    torch.testing.assert_close(last_logits(policy), base, atol=1e-5, rtol=0)
    policy.activate_adapter("a-in-place")
    torch.testing.assert_close(last_logits(policy), from_disk, atol=1e-5, rtol=0)
    policy.unload_adapter("a-in-place")
    assert sorted(policy.adapters) == ["disk", "memory"]


def test_tensors_that_do_not_fit_are_refused_and_change_nothing(policy, loras):
    policy.load_adapter("a", str(loras / "a"))
    policy.activate_adapter("a")
    before = last_logits(policy)
    with pytest.raises(AdapterError, match="names or shapes"):
        policy.replace_adapter_weights("a", "r8", tensors_of(loras / "r8"))  # rank 8 into a rank-16 slot
    incomplete = dict(list(tensors_of(loras / "b").items())[:-4])
    with pytest.raises(AdapterError, match="does not fit"):
        policy.load_adapter_weights("partial", config_of(loras / "b"), incomplete)
    assert policy.adapters == ["a"] and policy.active_adapter == "a"
    torch.testing.assert_close(last_logits(policy), before, atol=0, rtol=0)


def test_swap_in_from_the_registry_then_in_place_then_back_to_base(policy, loras, tmp_path):
    registry = AdapterRegistry(tmp_path / "registry")
    for name in ("a", "b", "r8"):
        folder = registry.begin()
        shutil.copytree(loras / name, folder, dirs_exist_ok=True)
        registry.commit(folder, AdapterMeta(base_model="smollm2"))
    base = last_logits(policy)

    first = swap_in(policy, registry, "v0001")
    assert (first.name, first.previous, first.source) == ("v0001", None, "disk")
    logits_a = last_logits(policy)

    second = swap_in(policy, registry, "v0002")  # same shapes: the v0001 slot is overwritten in place
    assert (second.previous, second.source) == ("v0001", "disk, in place")
    assert policy.adapters == ["v0002"] and policy.active_adapter == "v0002"
    logits_b = last_logits(policy)
    assert (logits_b - logits_a).abs().max() > 1e-2

    back = swap_in(
        policy, registry, "v0001", weights=AdapterWeights(config_of(loras / "a"), tensors_of(loras / "a"))
    )
    assert back.source == "memory, in place"
    torch.testing.assert_close(last_logits(policy), logits_a, atol=1e-5, rtol=0)

    other_rank = swap_in(policy, registry, "v0003")  # rank 8: new layers, then the old one is unloaded
    assert other_rank.source == "disk" and policy.adapters == ["v0003"]

    with pytest.raises(AdapterError, match="known: v0001, v0002, v0003"):
        swap_in(policy, registry, "v0009")
    assert policy.active_adapter == "v0003"  # a failed swap changes nothing

    to_base = swap_to_base(policy)
    assert (to_base.name, to_base.previous) == (None, "v0003") and policy.adapters == []
    torch.testing.assert_close(last_logits(policy), base, atol=1e-5, rtol=0)


def test_a_swap_between_two_steps_changes_the_adapter_of_later_steps(policy, loras, store, tmp_path):
    registry = AdapterRegistry(tmp_path / "registry")
    folder = registry.begin()
    save_random_adapter(policy.model, folder, seed=1)
    version = registry.commit(folder, AdapterMeta(base_model="smollm2")).version
    swaps = []

    def on_step(step) -> None:  # runs after step 0 is logged and before step 1 is generated
        if step.index == 0:
            swaps.append(swap_in(policy, registry, version))

    agent = Agent(policy, [calculator], store, 2, max_new_tokens=8)
    result = agent.run("Compute 17 * 23 with the calculator.", on_step=on_step)
    episode = store.get(result.trace_id)
    assert len(episode.steps) == 2 and len(swaps) == 1
    assert [s.adapter for s in episode.steps] == [None, version]
    # step 1 really came from the swapped-in weights: the same prompt, greedy, with the adapter, agrees
    step = episode.steps[1]
    prompt = episode.messages[: step.prompt_messages]
    again = policy.generate(prompt, max_new_tokens=8, stop=ACTION_STOP_STRINGS)[0]
    assert again.token_ids == step.completion.token_ids
    torch.testing.assert_close(again.logprobs, step.completion.logprobs, atol=1e-4, rtol=0)
    policy.activate_adapter(None)  # and the base model gives those tokens other log-probs
    base = policy.generate(prompt, max_new_tokens=8, stop=ACTION_STOP_STRINGS)[0]
    assert base.token_ids != step.completion.token_ids or base.logprobs != step.completion.logprobs
