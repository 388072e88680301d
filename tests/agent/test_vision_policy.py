"""``VisionPolicy`` with a real (tiny, randomly initialised) Idefics3 through transformers' own processor.

No pretrained VLM weights exist offline (regrpo/agent/vision_models.py), so these check the engine's
mechanics, which do not depend on what the weights know: images reach the model, the recorded tokens
and log-probs are the sampled ones, stop strings cut, LoRA trains the language model only.
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from regrpo.agent.model_files import DEFAULT_MODEL, resolve_model_dir
from regrpo.agent.vision import VisionPolicy, fit_pixel_budget, language_model_targets
from regrpo.agent.vision_models import build_tiny_idefics3, build_tiny_qwen2_vl
from regrpo.errors import InputError, ModelError

RED, BLUE = Image.new("RGB", (80, 40), (220, 20, 20)), Image.new("RGB", (40, 80), (20, 20, 220))


def chat(image: Image.Image) -> list[dict[str, object]]:
    return [
        {"role": "system", "content": "Answer about the image."},
        {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "Colour?"}]},
    ]


FAMILIES = [build_tiny_idefics3, build_tiny_qwen2_vl]


@pytest.fixture(scope="module", params=FAMILIES, ids=["idefics3", "qwen2-vl"])
def vlm(request, tmp_path_factory):
    return VisionPolicy(request.param(tmp_path_factory.mktemp("tiny-vlm")))


def test_the_prompt_holds_the_image_tokens_and_the_image_changes_the_output(vlm):
    text_only = vlm.encode([{"role": "user", "content": "Colour?"}])["input_ids"].shape[1]
    red = vlm.generate(chat(RED), max_new_tokens=6)[0]
    assert red.prompt_tokens > text_only + 4  # the image became tokens in the prompt
    scored_red = vlm.token_logprobs(chat(RED), red.token_ids)
    scored_blue = vlm.token_logprobs(chat(BLUE), red.token_ids)  # same tokens, the other picture
    assert not torch.allclose(scored_red, scored_blue, atol=1e-4)


@pytest.mark.parametrize("temperature", [0.0, 0.7, 1.0])
def test_recorded_logprobs_equal_a_fresh_forward_pass_with_the_image(vlm, temperature):
    completions = vlm.generate(chat(RED), n=3, temperature=temperature, max_new_tokens=8, seed=3)
    assert len(completions) == 3
    for completion in completions:
        expected = vlm.token_logprobs(chat(RED), completion.token_ids, temperature=temperature or 1.0)
        assert torch.allclose(torch.tensor(completion.logprobs), expected, atol=1e-4)
    if temperature == 0:
        assert completions[0].token_ids == completions[1].token_ids == completions[2].token_ids


def test_a_seeded_call_repeats_and_a_stop_string_cuts_after_the_token_that_completes_it(vlm):
    def sample(stop=()):
        return vlm.generate(chat(RED), temperature=1.0, max_new_tokens=10, seed=11, stop=stop)[0]

    first = sample()
    assert first.token_ids == sample().token_ids and len(first.token_ids) == 10
    pieces = [vlm._decode(first.token_ids[k : k + 1]) for k in range(2, 8)]
    stop = next(piece for piece in pieces if piece.strip())  # a token's text a few tokens in
    cut = sample([stop])
    assert cut.finish_reason == "stop" and stop in cut.text and len(cut.token_ids) <= 8
    assert cut.token_ids == first.token_ids[: len(cut.token_ids)]
    assert stop not in vlm._decode(cut.token_ids[:-1])  # nothing past the token that completed it


def test_unseeded_sampled_calls_draw_new_samples(vlm):
    first, second = (vlm.generate(chat(RED), temperature=1.0, max_new_tokens=8)[0] for _ in range(2))
    assert first.token_ids != second.token_ids  # the random state moved on between the calls


def test_an_image_over_the_pixel_budget_is_resized_and_the_scale_returned():
    big = Image.new("RGB", (400, 100))
    fitted, scale = fit_pixel_budget(big, 10_000)
    assert fitted.size == (200, 50) and scale == 0.5
    same, one = fit_pixel_budget(big, 40_000)
    assert same is big and one == 1.0


def test_a_lora_step_changes_the_vlm_and_disabling_the_adapter_restores_it(vlm):
    from peft import LoraConfig

    tokens = vlm.generate(chat(RED), max_new_tokens=6)[0].token_ids
    before = vlm.token_logprobs(chat(RED), tokens)
    targets = language_model_targets(["q_proj", "v_proj"])
    vlm.add_trainable_adapter("step", LoraConfig(r=4, lora_alpha=8, target_modules=targets))
    trained = [name for name, p in vlm.model.named_parameters() if p.requires_grad]
    assert trained and not [name for name in trained if "vision" in name or "visual" in name]
    optimizer = torch.optim.Adam([p for p in vlm.model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):  # LoRA's B starts at 0: the first step moves B, the next ones move the outputs
        loss = -vlm.token_logprobs(chat(RED), tokens, grad=True).sum()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    after = vlm.token_logprobs(chat(RED), tokens)
    assert after.sum() > before.sum() + 1e-3  # the step made the sampled tokens likelier
    assert vlm.generate(chat(RED), max_new_tokens=6)[0].adapter == "step"
    vlm.activate_adapter(None)
    assert torch.allclose(vlm.token_logprobs(chat(RED), tokens), before, atol=1e-5)
    vlm.unload_adapter("step")


@pytest.mark.parametrize(
    "content, problem",
    [
        ([{"type": "image", "image": "photo.png"}], "needs a PIL image under 'image'; got str"),
        ([{"type": "video", "video": None}], "a content part must be"),
        (42, "'content' must be a string or a list"),
    ],
)
def test_bad_message_content_is_an_input_error_saying_what_to_pass(vlm, content, problem):
    with pytest.raises(InputError, match=problem):
        vlm.generate([{"role": "user", "content": content}])


def test_a_text_only_model_is_refused_with_the_engine_to_use():
    with pytest.raises(ModelError, match="text-only model .*use LocalPolicy"):
        VisionPolicy(resolve_model_dir(DEFAULT_MODEL, None))


def test_the_pixel_budget_decides_how_many_image_tokens_a_qwen2_vl_prompt_holds(tmp_path):
    folder = build_tiny_qwen2_vl(tmp_path / "qwen")
    square = Image.new("RGB", (224, 224), (10, 200, 10))
    wide, narrow = VisionPolicy(folder), VisionPolicy(folder, max_image_pixels=56 * 56)
    tokens = [policy.encode(chat(square))["input_ids"].shape[1] for policy in (wide, narrow)]
    assert tokens[0] - tokens[1] == (224 // 28) ** 2 - (56 // 28) ** 2  # one token per 28 x 28 pixels
