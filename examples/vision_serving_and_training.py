"""Serve a vision-language model over HTTP, and take a training step on its samples with the image.

    .venv/bin/python examples/vision_serving_and_training.py

1. ``regrpo serve-model``'s app serves a ``VisionPolicy``; the agent talks to it through
   ``OpenAIPolicy(images=True)`` (as it would to a vLLM serving Qwen2.5-VL): the image travels as an
   ``image_url`` part and the server's prompt count holds its image tokens.
2. ``LoraTrainer`` scores two sampled completions with the same image and takes one policy-gradient
   step (advantages +1 / -1): the log-probs the trainer recomputes equal the sampler's, and the step
   moves them. ReGRPO does the same at each branch point (its group's chat carries the images).

No pretrained VLM weights are available offline, so the model is a tiny, randomly initialised
Qwen2-VL: the processor, the server, the client and the trainer are real, the model's words are noise.
"""

import tempfile
from pathlib import Path

from PIL import Image

from regrpo import Agent, OpenAIPolicy, VisionPolicy
from regrpo.agent.vision_models import build_tiny_qwen2_vl
from regrpo.learning.lora_trainer import LoraTrainer
from regrpo.learning.sequences import rollout_sample
from regrpo.server.model_server import build_model_app, running_server

folder = build_tiny_qwen2_vl(Path(tempfile.mkdtemp()) / "tiny-qwen2-vl")
picture = Image.new("RGB", (112, 56), (220, 30, 30))

# 1. serving: the agent's images go over the wire to the served model
with running_server(build_model_app(VisionPolicy(folder))) as url:
    remote = OpenAIPolicy(url, str(folder), images=True)
    result = Agent(remote, adapter=None, max_steps=1, max_new_tokens=8).run("What colour is img_0?", picture)
    print(f"served: {result.steps[0].completion.prompt_tokens} prompt tokens (the image's included)")

# 2. training: one policy-gradient step on two samples of the same chat with its image
policy = VisionPolicy(folder)
chat = [
    {"role": "user", "content": [{"type": "image", "image": picture}, {"type": "text", "text": "Colour?"}]}
]
completions = policy.generate(chat, n=2, temperature=1.0, max_new_tokens=8, seed=0)
samples = [rollout_sample(policy, chat, c) for c in completions]
with LoraTrainer(policy, learning_rate=1e-2, temperature=1.0) as trainer:
    before = trainer.logprobs(samples)
    gap = max(
        abs(a - b)
        for s, c in zip(before, completions, strict=True)
        for a, b in zip(s.tolist(), c.logprobs, strict=True)
    )
    print(f"trainer vs sampler log-probs, largest gap: {gap:.1e}")
    advantages = [1.0, -1.0]
    trainer.backward(samples, lambda i, logprobs: -advantages[i] * logprobs.mean())
    trainer.step()
    after = trainer.logprobs(samples)
    for i, (old, new) in enumerate(zip(before, after, strict=True)):
        print(
            f"sample {i} (advantage {advantages[i]:+.0f}): mean log-prob {old.mean():.3f} -> {new.mean():.3f}"
        )
