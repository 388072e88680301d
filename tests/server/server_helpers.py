"""Helpers shared by the server tests: a scripted turn, small encoded images, CLI servers on real ports."""

from __future__ import annotations

import base64
import io
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def regrpo_server(*args: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """Start ``regrpo <args> --port P``; yield its base URL once uvicorn says it is running.

    The server's log is drained by a thread for as long as it runs (a full pipe would block it) and
    shown if it dies before starting.
    """
    port = free_port()
    command = [sys.executable, "-m", "regrpo.cli", *args, "--port", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stderr is not None
        seen = []
        for line in process.stderr:  # blocks until the server logs; ends if the process dies
            seen.append(line)
            if "Uvicorn running on" in line:
                break
        else:
            pytest.fail(f"regrpo {args[0]} exited with {process.wait()}:\n{''.join(seen)}")
        threading.Thread(target=process.stderr.read, daemon=True).start()  # drain to the end
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=60)
