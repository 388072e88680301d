"""Training with pixels (issue 15): ``LoraTrainer`` on a ``VisionPolicy``, and one ReGRPO step at a
branch point of an episode whose prompt holds a crop's output image.

Tiny randomly initialised VLMs (regrpo/agent/vision_models.py: no pretrained VLM is reachable
offline) with transformers' real processors. What is checked does not depend on what the weights
know: the trainer scores the tokens the engine sampled with the same images to the same log-probs,
a step changes them and closing the trainer restores the engine, and a traffic episode's branch
point is replayed into the very prompt (ids and pixels) the engine was shown, then trained on.
"""

from __future__ import annotations

import asyncio
import json

import msgspec
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from vision_helpers import ScriptedVision

from regrpo import Agent
from regrpo.agent.vision import VisionPolicy
from regrpo.agent.vision_models import build_tiny_idefics3, build_tiny_qwen2_vl
from regrpo.errors import InputError
from regrpo.learning.data_engine import build_dataset
from regrpo.learning.grpo import GRPOConfig, train_grpo
from regrpo.learning.lora_trainer import LoraSettings, LoraTrainer
from regrpo.learning.records import SFTExample
from regrpo.learning.regrpo import ReGRPOConfig, engine_chat, train_regrpo
from regrpo.learning.replay import BranchEnvironment, example_images
from regrpo.learning.sequences import TokenSample, example_samples, pack_turns, rollout_sample
from regrpo.learning.sft import SFTConfig, train_sft
from regrpo.tasks.suite import builtin_suite
from regrpo.tools import Toolbox
from regrpo.tools.image_ops import crop, rotate
from regrpo.traces.schema import Completion, Message, ToolCall

pytestmark = pytest.mark.slow

PICTURE = Image.new("RGB", (56, 56), (30, 160, 40))


def chat(image: Image.Image) -> list[dict[str, object]]:
    return [
        {"role": "system", "content": "Answer about the image."},
        {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "Colour?"}]},
    ]


@pytest.fixture(
    scope="module", params=[build_tiny_idefics3, build_tiny_qwen2_vl], ids=["idefics3", "qwen2-vl"]
)
def folder(request, tmp_path_factory):
    return request.param(tmp_path_factory.mktemp("tiny-vlm"))


def sampled(policy: VisionPolicy, n: int, seed: int):
    completions = policy.generate(chat(PICTURE), n=n, temperature=1.0, max_new_tokens=8, seed=seed)
    return completions, [rollout_sample(policy, chat(PICTURE), c) for c in completions]


@pytest.mark.parametrize("n", [1, 3], ids=["one", "batched"])
def test_the_trainer_scores_sampled_tokens_with_their_images_as_the_engine_did(folder, n):
    policy = VisionPolicy(folder)
    completions, samples = sampled(policy, n, seed=n)
    assert all("pixel_values" in s.model_inputs for s in samples)  # the image reaches the trainer
    assert samples[0].prompt_ids == policy.encode(chat(PICTURE))["input_ids"][0].tolist()
    with LoraTrainer(policy) as trainer:
        for completion, logprobs in zip(completions, trainer.logprobs(samples), strict=True):
            assert logprobs.tolist() == pytest.approx(completion.logprobs, abs=1e-4)
        blank = rollout_sample(policy, chat(Image.new("RGB", (56, 56))), completions[0])
        assert not torch.allclose(trainer.logprobs([blank])[0], trainer.logprobs(samples[:1])[0], atol=1e-4)


def test_a_step_changes_the_log_probs_and_closing_the_trainer_restores_the_engine(folder):
    policy = VisionPolicy(folder)
    completions, samples = sampled(policy, 2, seed=7)
    tokens = completions[0].token_ids
    before = policy.token_logprobs(chat(PICTURE), tokens)
    with LoraTrainer(policy, learning_rate=1e-2) as trainer:
        lora = [name for name, p in policy.model.named_parameters() if p.requires_grad]
        assert lora and not any("vision" in name or "visual" in name for name in lora)  # language model only
        trainer.backward(samples, lambda i, logprobs: -logprobs.sum())
        trainer.step()
        after = trainer.logprobs(samples[:1])[0]
        assert float((after - before).abs().max()) > 1e-3
        assert torch.allclose(trainer.logprobs(samples[:1], reference=True)[0], before, atol=1e-4)
    assert torch.allclose(policy.token_logprobs(chat(PICTURE), tokens), before, atol=1e-5)


def test_the_vision_tower_is_adapted_only_when_asked(folder):
    policy = VisionPolicy(folder)
    targets = ("q_proj", "v_proj", "qkv")  # Idefics3's tower has q/v_proj, Qwen2-VL's qkv
    with LoraTrainer(policy, LoraSettings(target_modules=targets, vision_tower=True)):
        tower = [
            n
            for n, p in policy.model.named_parameters()
            if p.requires_grad and ("vision" in n or "visual" in n)
        ]
        assert tower  # LoRA inside the vision tower too
    with LoraTrainer(policy, LoraSettings(target_modules=targets)):
        assert not any(
            p.requires_grad and ("vision" in n or "visual" in n) for n, p in policy.model.named_parameters()
        )


def test_image_samples_are_not_packed_and_what_is_not_built_says_so(folder, store):
    inputs = {"attention_mask": torch.ones(1, 2, dtype=torch.long)}
    first = TokenSample([1, 2], [3], model_inputs=inputs)
    second = TokenSample([1, 2, 3], [4], model_inputs=inputs)
    assert pack_turns([first, second]) == [first, second]  # each turn shows its own images
    with pytest.raises(InputError, match="scored whole"):
        TokenSample([1, 2], [3], system_tokens=1, model_inputs=inputs)
    policy = VisionPolicy(folder)
    named = [Message("user", "What is in img_0 (56x56)?", images=("img_0",))]  # ids, no pixels
    with pytest.raises(InputError, match="holds no image parts"):
        rollout_sample(policy, named, Completion("x", token_ids=[1]))
    with pytest.raises(InputError, match="train with ReGRPO"):
        train_grpo(policy, builtin_suite(2), GRPOConfig(), "unused", store=store)


# -- SFT with pixels: each turn shows the images its messages name, rebuilt by replay ------------------


def crop_example(tmp_path) -> SFTExample:
    """A two-turn chat as the runtime renders one: the task with its image, a crop, its output, the answer."""
    path = tmp_path / "birds.png"
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (56, 56, 3), dtype=np.uint8)).save(path)
    messages = [
        Message("system", "You answer questions about images with tools."),
        Message("user", "How many birds are in img_0 (56x56)?", images=("img_0",)),
        Message("assistant", call(GOOD_CROP)),
        Message("user", "<tool_response>made img_1 (28x28)</tool_response>", images=("img_1",)),
        Message("assistant", "<answer>7</answer>"),
    ]
    return SFTExample(messages, [2, 4], "reference", "birds", images=[str(path)])


def image_tokens(policy: VisionPolicy, sample: TokenSample) -> int:
    return sample.prompt_ids.count(policy.tokenizer.convert_tokens_to_ids(policy.processor.image_token))


def test_an_sft_example_shows_each_turn_its_rebuilt_images_and_trains(folder, tmp_path):
    example = crop_example(tmp_path)
    images = asyncio.run(example_images(example, Toolbox([crop, rotate])))
    assert [(i.image_id, i.width, i.height) for i in images.infos()] == [("img_0", 56, 56), ("img_1", 28, 28)]
    policy = VisionPolicy(folder)
    crop_turn, answer_turn = example_samples(policy, example, images=images)
    assert 0 < image_tokens(policy, crop_turn) < image_tokens(policy, answer_turn)  # the crop joined
    with pytest.raises(InputError, match="pass them as images="):
        example_samples(policy, example)

    unlisted = msgspec.structs.replace(example, images=[])  # written before examples listed their images
    config = SFTConfig(kinds=("reference",), epochs=1, batch_size=4, max_target_tokens=64)
    report = train_sft(
        policy, [example, unlisted], config, tmp_path / "sft", tools=[crop, rotate], progress=False
    )
    assert report.samples == 2 and report.steps == 1 and report.unreplayable == 1
    weights = load_file(str(tmp_path / "sft" / "adapter_model.safetensors"))
    assert any(float(w.abs().max()) > 0 for key, w in weights.items() if "lora_B" in key)


# -- one ReGRPO step at a traffic branch point with a crop's image in its prompt -----------------------

GOOD_CROP = ToolCall("crop", {"image": "img_0", "box": [0, 0, 28, 28]})
BAD_CROP = ToolCall("crop", {"image": "img_1", "box": [40, 40, 90, 90]})  # outside the 28x28 crop
FIX_CROP = ToolCall("crop", {"image": "img_1", "box": [0, 0, 14, 14]})


def call(action: ToolCall) -> str:
    return f"<tool_call>{json.dumps({'name': action.name, 'arguments': action.arguments})}</tool_call>"


def says_seven(task: str, answer: str | None) -> float:
    """The app's verifier (importable: the trainer calls it by name)."""
    return 1.0 if (answer or "").strip() == "7" else 0.0


def test_a_branch_point_replays_the_prompt_the_engine_saw_and_trains_one_regrpo_step(folder, store, tmp_path):
    script = [call(GOOD_CROP), call(BAD_CROP), call(FIX_CROP), "<answer>7</answer>"]
    engine = ScriptedVision(folder, script, token_ids=True)
    user_image = np.random.default_rng(3).integers(0, 256, (56, 56, 3), dtype=np.uint8)
    agent = Agent(engine, tools=[crop, rotate], store=store)
    result = agent.run("How many birds are there?", [user_image], verifier=says_seven)
    assert result.reward == 1.0 and result.steps[1].failed

    (point,) = build_dataset([], store=store, image_dir=tmp_path / "images", progress=False).branch_points
    assert point.failed_action == BAD_CROP and point.taken is not None
    assert [m.images for m in point.messages] == [(), ("img_0",), (), ("img_1",), (), ()]
    environment = BranchEnvironment(Toolbox([crop, rotate]))
    policy = VisionPolicy(folder)
    replayed, shown = policy.encode(engine_chat(policy, environment, point)), policy.encode(engine.chats[2])
    assert replayed.keys() == shown.keys() and "pixel_values" in replayed
    assert all(torch.equal(replayed[key], shown[key]) for key in replayed)  # the same ids and pixels

    (made,) = point.replay_images
    changed = msgspec.structs.replace(  # as if the crop tool now made other pixels: not replayable
        point, id="changed", replay_images=[msgspec.structs.replace(made, sha256="0" * 64)]
    )
    config = ReGRPOConfig(group_size=2, max_new_tokens=8, outcome_max_steps=3, learning_rate=1e-3, seed=0)
    points = [changed, point]
    report = train_regrpo(policy, points, config, tmp_path / "adapter", tools=[crop, rotate], progress=False)
    assert report.unreplayable == 1 and report.groups == 1  # skipped and counted, not a crash
    assert report.steps == 1 and report.taken_turns == 1  # the taken fix gave the group its spread
    weights = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    assert not any("vision" in key or "visual" in key for key in weights)
    assert any(float(w.abs().max()) > 0 for key, w in weights.items() if "lora_B" in key)  # B left zero
