"""What scoring a training sample costs with images, against the text path, on real language weights.

One training sample (the built-in tools' system prompt, a task message, the completion SmolLM2
sampled there, at most 32 tokens) through ``LoraTrainer.backward`` (forward + backward, one LoRA
step's worth), the median of ``--repeats`` runs, in one process:

* SmolLM2-135M in ``LocalPolicy``, with the system prompt's keys and values reused (the default)
  and without (the exact gradient);
* the same language weights inside an Idefics3 (``build_smollm2_idefics3``: a fresh vision tower)
  in ``VisionPolicy``, with no image, one image and two images (16 image tokens each). A sample with
  images is scored whole (no system-prompt reuse: docs/decisions.md, "Scored whole").

The ratio column is each row's time over the first row's. CPU numbers; the vision tower is small,
so the image rows say what the longer prompt and the lost reuse cost, not what a 3 B VLM would take.

    .venv/bin/python benchmarks/vision_training.py            # about two minutes on a 2-core CPU
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from PIL import Image

from regrpo.agent.local import LocalPolicy
from regrpo.agent.prompts import render_system_prompt
from regrpo.agent.vision import VisionPolicy
from regrpo.agent.vision_models import build_smollm2_idefics3
from regrpo.learning.lora_trainer import LoraTrainer
from regrpo.learning.sequences import TokenSample, rollout_sample
from regrpo.tools import default_tools
from regrpo.traces.schema import Completion


def backward_seconds(trainer: LoraTrainer, sample: TokenSample, repeats: int) -> float:
    def loss(_: int, logprobs: Any) -> Any:
        return -logprobs.mean()

    trainer.backward([sample], loss)  # warm-up (and the system prompt's cache, where it is used)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        trainer.backward([sample], loss)
        times.append(time.perf_counter() - started)
    trainer.optimizer.zero_grad(set_to_none=True)
    return statistics.median(times)


def chat(images: int) -> list[dict[str, Any]]:
    system = render_system_prompt(default_tools())
    pictures = [Image.new("RGB", (96, 64), (40 * i, 120, 200)) for i in range(images)]
    parts: list[dict[str, Any]] = [{"type": "image", "image": p} for p in pictures]
    parts.append({"type": "text", "text": "How many birds are in the picture? Use the tools."})
    return [{"role": "system", "content": system}, {"role": "user", "content": parts}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    text = LocalPolicy()
    text_chat = [{"role": m["role"], "content": m["content"] if m["role"] == "system" else
                  m["content"][-1]["text"]} for m in chat(0)]  # fmt: skip
    (completion,) = text.generate(text_chat, max_new_tokens=32, temperature=1.0, seed=0)
    tokens = list(completion.token_ids)
    rows: list[tuple[str, int, float]] = []
    for detach in (True, False):
        sample = rollout_sample(text, text_chat, completion)
        with LoraTrainer(text, detach_system_prompt=detach) as trainer:
            label = "LocalPolicy, text, " + ("system prompt reused" if detach else "scored whole")
            rows.append((label, len(sample.prompt_ids), backward_seconds(trainer, sample, args.repeats)))
    with tempfile.TemporaryDirectory() as folder:
        vision = VisionPolicy(build_smollm2_idefics3(Path(folder) / "smollm2-idefics3"))
        for images in (0, 1, 2):
            shown = chat(images)
            sample = rollout_sample(vision, shown, Completion(text=completion.text, token_ids=tokens))
            with LoraTrainer(vision) as trainer:
                label = f"VisionPolicy (Idefics3), {images} image{'s' if images != 1 else ''}, scored whole"
                rows.append((label, len(sample.prompt_ids), backward_seconds(trainer, sample, args.repeats)))
    first = rows[0][2]
    print(f"one sample, {len(tokens)} completion tokens, median of {args.repeats}")
    print("| sample | prompt tokens | forward + backward | ratio |")
    print("|---|---:|---:|---:|")
    for label, prompt, seconds in rows:
        print(f"| {label} | {prompt} | {seconds:.2f} s | {seconds / first:.2f} × |")


if __name__ == "__main__":
    main()
