"""Prompt tokens and step time per image at two pixel budgets, against the same step with no image.

One agent step (the built-in tools' system prompt, a task message) on a tiny randomly initialised
Qwen2-VL (``regrpo.agent.vision_models``: no pretrained VLM is available offline), greedy, 16 new
tokens, the median of ``--repeats`` runs. Qwen2-VL turns every 28 × 28 pixels into one image token,
so the budget (``VisionPolicy(max_image_pixels=)``) sets the prompt's length; the ratio column is each
row's step time over the no-image row's, measured in the same process. The model is tiny, so the
times say what the image costs in prompt length and preprocessing, not what a 3 B model would take.

    .venv/bin/python benchmarks/vision_budget.py            # about half a minute on a 2-core CPU
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from PIL import Image

from regrpo.agent.prompts import render_system_prompt
from regrpo.agent.vision import VisionPolicy
from regrpo.agent.vision_models import build_tiny_qwen2_vl
from regrpo.tools import default_tools


def step_seconds(policy: VisionPolicy, chat: list[dict[str, Any]], repeats: int) -> float:
    policy.generate(chat, max_new_tokens=16)  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        policy.generate(chat, max_new_tokens=16)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--image-side", type=int, default=896, help="side of the square test image (px)")
    args = parser.parse_args()

    folder = build_tiny_qwen2_vl(Path(tempfile.mkdtemp()) / "tiny-qwen2-vl")
    system = {"role": "system", "content": render_system_prompt(default_tools())}
    question = {"type": "text", "text": "What does the sign in img_0 say?"}
    image = Image.new("RGB", (args.image_side, args.image_side), (30, 120, 200))
    rows = [("no image", None), ("112 x 112", 112 * 112), ("448 x 448", 448 * 448)]
    print(f"| budget | image tokens | prompt tokens | step s (median of {args.repeats}) | vs no image |")
    print("|---|---:|---:|---:|---:|")
    baseline_tokens, baseline_s = 0, 0.0
    for label, budget in rows:
        policy = VisionPolicy(folder, max_image_pixels=budget or 1)
        content = [question] if budget is None else [{"type": "image", "image": image}, question]
        chat = [system, {"role": "user", "content": content}]
        tokens = int(policy.encode(chat)["input_ids"].shape[1])
        seconds = step_seconds(policy, chat, args.repeats)
        if budget is None:
            baseline_tokens, baseline_s = tokens, seconds
        image_tokens = tokens - baseline_tokens - (2 if budget else 0)  # vision start and end marks
        print(f"| {label} | {image_tokens} | {tokens} | {seconds:.3f} | {seconds / baseline_s:.2f}× |")


if __name__ == "__main__":
    main()
