"""``build_smollm2_idefics3``: SmolLM2-135M's real language weights inside an Idefics3 (issue 15's
offline VLM with real language weights). On text it must be SmolLM2 (same prompt ids, same greedy
tokens, same log-probs as ``LocalPolicy``); an image must reach it through the new vision tower."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from regrpo.agent.vision import VisionPolicy
from regrpo.agent.vision_models import build_smollm2_idefics3

pytestmark = pytest.mark.slow

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}


@pytest.fixture(scope="module")
def smol_vlm(tmp_path_factory):
    return VisionPolicy(build_smollm2_idefics3(tmp_path_factory.mktemp("smol-vlm") / "smollm2-idefics3"))


def test_on_text_it_writes_what_smollm2_writes(smol_vlm, smollm):
    chat = [SYSTEM, {"role": "user", "content": "What is the capital of France?"}]
    assert smol_vlm.encode(chat)["input_ids"][0].tolist() == smollm.encode_chat(chat)
    (vlm,), (text,) = smol_vlm.generate(chat, max_new_tokens=12), smollm.generate(chat, max_new_tokens=12)
    assert vlm.token_ids == text.token_ids and "Paris" in vlm.text
    assert vlm.logprobs == pytest.approx(text.logprobs, abs=1e-4)


def test_an_image_reaches_it_through_the_new_vision_tower(smol_vlm):
    def chat(image: Image.Image) -> list[dict[str, object]]:
        parts = [{"type": "image", "image": image}, {"type": "text", "text": "What colour is this?"}]
        return [SYSTEM, {"role": "user", "content": parts}]

    text_only = smol_vlm.encode([SYSTEM, {"role": "user", "content": "What colour is this?"}])["input_ids"]
    red, blue = Image.new("RGB", (100, 60), (200, 0, 0)), Image.new("RGB", (100, 60), (0, 0, 200))
    assert smol_vlm.encode(chat(red))["input_ids"].shape[1] >= text_only.shape[1] + 16  # 16 image tokens
    tokens = smol_vlm.generate(chat(red), max_new_tokens=6)[0].token_ids
    scored_red = smol_vlm.token_logprobs(chat(red), tokens)
    assert not torch.allclose(scored_red, smol_vlm.token_logprobs(chat(blue), tokens), atol=1e-4)
