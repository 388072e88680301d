"""The agent behind an OpenAI-compatible endpoint, called with the official ``openai`` client.

    .venv/bin/python examples/http_server.py

Starts ``regrpo serve`` in this process on a free loopback port with a scripted policy (a test
double, so it runs offline in a second), sends one normal and one streamed request with an image,
records feedback for the first answer, and shuts down. With a real model, build the agent with
``Agent(LocalPolicy())`` (or run ``regrpo serve``) and nothing else changes.
"""

import base64
import io
import re
import tempfile
from pathlib import Path

import httpx
import numpy as np
import openai
from PIL import Image

from regrpo import Agent, ScriptedPolicy, TraceStore
from regrpo.server.app import build_agent_app, start_in_thread
from regrpo.server.config import ServerConfig
from regrpo.tools.calculator import calculator
from regrpo.tools.image_ops import crop


def reply(chat):
    """Scripted turns: crop the image's left half, then answer with the crop's size."""
    if len(chat) == 2:  # system + task: the first turn
        width = int(re.search(r"(\d+)x\d+", chat[1]["content"]).group(1))
        box = [0, 0, width // 2, 9999]  # parts outside the image are dropped
        return f'<tool_call>{{"name": "crop", "arguments": {{"image": "img_0", "box": {box}}}}}</tool_call>'
    size = re.search(r'"width":(\d+),"height":(\d+)', chat[-1]["content"])
    return f"<answer>{size.group(1)}x{size.group(2)}</answer>"


store = TraceStore(Path(tempfile.mkdtemp()) / "traces.sqlite")
agent = Agent(ScriptedPolicy([reply], cycle=True), tools=[calculator, crop], store=store)
app = build_agent_app(agent, ServerConfig(api_keys=("sk-local",)))

buffer = io.BytesIO()
Image.fromarray(np.full((60, 80, 3), 200, np.uint8)).save(buffer, "PNG")
image_url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
message = {
    "role": "user",
    "content": [
        {"type": "text", "text": "Crop the left half of this picture. How big is the crop?"},
        {"type": "image_url", "image_url": {"url": image_url}},
    ],
}

with start_in_thread(app) as server:
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="sk-local")

    completion = client.chat.completions.create(model="regrpo-agent", messages=[message])
    extension = completion.model_extra["regrpo"]
    print("answer:", completion.choices[0].message.content)
    print("trace:", extension["trace_id"], "| steps:", [s["kind"] for s in extension["steps"]])

    print("streamed:")
    for chunk in client.chat.completions.create(model="regrpo-agent", messages=[message], stream=True):
        delta = chunk.choices[0].delta if chunk.choices else None
        if delta and delta.model_extra.get("reasoning"):
            print("  step  ", delta.model_extra["reasoning"].strip())
        if delta and delta.content:
            print("  answer", delta.content)

    graded = client.post(
        "/feedback", body={"trace_id": extension["trace_id"], "answer": "40x60"}, cast_to=httpx.Response
    ).json()
    print("feedback reward:", graded["reward"])

print("episodes in the store:", len(store), "| rewards:", [e.reward for e in store.episodes()])
