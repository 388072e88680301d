"""A vision-language engine: the model is shown the user's image, and every image a tool makes.

    .venv/bin/python examples/vision_policy.py

``VisionPolicy`` loads any transformers image-text-to-text model (Qwen2-VL/2.5-VL, Idefics3/SmolVLM).
No pretrained VLM weights are available offline, so this builds a tiny, randomly initialised
Qwen2-VL: the engine, the processor and the agent loop are real, the model's words are noise. With
a model hub, ``VisionPolicy("Qwen/Qwen2.5-VL-3B-Instruct")`` is the same call.
"""

import tempfile
from pathlib import Path

import numpy as np

from regrpo import Agent, TraceStore, VisionPolicy
from regrpo.agent.vision_models import build_tiny_qwen2_vl

workdir = Path(tempfile.mkdtemp())
policy = VisionPolicy(build_tiny_qwen2_vl(workdir / "tiny-qwen2-vl"), max_image_pixels=112 * 112)

picture = np.zeros((96, 160, 3), dtype=np.uint8)
picture[:, :80] = (220, 30, 30)  # left half red
store = TraceStore(workdir / "traces.sqlite")
agent = Agent(policy, store=store, adapter=None, max_steps=2, max_new_tokens=16)
result = agent.run("What colour is the left half of img_0?", picture)

for step in result.steps:
    print(f"step {step.index}: {step.completion.prompt_tokens} prompt tokens (image tokens included)")
for message in store.get(result.trace_id).messages:
    shown = f" · shown {', '.join(message.images)}" if message.images else ""
    print(f"{message.role:9} {len(message.content):5} chars{shown}")
print(f"status: {result.status} (random weights: no answer is expected)")
