"""How often the base model's first turn is a usable action, for two ways of showing the format.

A. the shipped system prompt (tool signatures, format, and an example written inside it);
B. the same without the example, plus the example as real chat turns (few-shot messages).

For each demo task it samples ``--samples`` first turns (temperature 0.7, ≤48 new tokens, the loop's
stop strings) and counts what ``parse_action`` makes of them. The result says whether RL could start
from the base model (it needs some tool calls in a group to get any reward variance).

    .venv/bin/python benchmarks/format_adherence.py        # about 2.5 minutes on a 2-core CPU
"""

from __future__ import annotations

import argparse
import collections
import time

import torch

from regrpo.agent.actions import ACTION_STOP_STRINGS, parse_action
from regrpo.agent.local import LocalPolicy
from regrpo.agent.prompts import render_system_prompt, render_task
from regrpo.tasks import demo_tasks
from regrpo.tools import ImageStore, default_tools

FEW_SHOT = [
    {"role": "user", "content": "What is 12 * 7 + 1?"},
    {
        "role": "assistant",
        "content": '<tool_call>{"name": "calculator", "arguments": {"expression": "12 * 7 + 1"}}</tool_call>',
    },
    {"role": "user", "content": "<tool_response>85</tool_response>"},
    {"role": "assistant", "content": "<answer>85</answer>"},
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    policy = LocalPolicy()
    system = render_system_prompt(default_tools())
    variants = {
        "A: example inside the system prompt (shipped)": [{"role": "system", "content": system}],
        "B: example as chat turns": [
            {"role": "system", "content": system.split("\n\nExample:")[0]},
            *FEW_SHOT,
        ],
    }
    print("| variant | tool calls | answers | unparseable | seconds |\n|---|---:|---:|---:|---:|")
    for name, prefix in variants.items():
        counts: collections.Counter[str] = collections.Counter()
        started = time.perf_counter()
        for task in demo_tasks(args.tasks, seed=args.seed):
            images = ImageStore()
            for image in task.images:
                images.add(image)
            chat = [*prefix, {"role": "user", "content": render_task(task.question, images.infos())}]
            for completion in policy.generate(
                chat, n=args.samples, temperature=0.7, max_new_tokens=48, stop=ACTION_STOP_STRINGS
            ):
                counts[type(parse_action(completion.text)).__name__] += 1
        total = args.tasks * args.samples
        print(
            f"| {name} | {counts['ToolCall']}/{total} | {counts['Answer']}/{total} | "
            f"{counts['Unparseable']}/{total} | {time.perf_counter() - started:.0f} |"
        )


if __name__ == "__main__":
    main()
