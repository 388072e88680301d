"""Helpers shared by the agent-server tests: a deterministic scripted turn and small encoded images."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
from hypothesis import strategies as st
from PIL import Image

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=30)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
"""Any JSON value (with NaN, which Python's json writes): the fuzz tests' building block."""


def crop_then_report(chat: list[dict[str, str]]) -> str:
    """A scripted agent's turn: crop the top-left 4x3 of img_0, then answer with the crop's size.

    The answer is read from the real crop tool's observation, so it is right only if the server
    decoded the image and the tool ran on it.
    """
    turns = sum(m["role"] == "assistant" for m in chat)
    if turns == 0:
        return '<tool_call>{"name": "crop", "arguments": {"image": "img_0", "box": [0, 0, 4, 3]}}</tool_call>'
    size = re.search(r'"width":(\d+),"height":(\d+)', chat[-1]["content"])
    return f"<answer>{size.group(1)}x{size.group(2)}</answer>" if size else "<answer>no size</answer>"


def png_bytes(width: int = 12, height: int = 10, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def data_url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64," + base64.b64encode(data).decode()


def image_message(text: str, *urls: str) -> dict:
    parts: list[dict] = [{"type": "text", "text": text}]
    parts += [{"type": "image_url", "image_url": {"url": url}} for url in urls]
    return {"role": "user", "content": parts}
