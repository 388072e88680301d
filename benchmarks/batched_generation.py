"""k concurrent ``LocalPolicy.generate`` calls: coalesced into batches vs run one at a time.

Each call is one agent step on the runtime's real prompt (the built-in tools' system prompt and a
suite task's first user message, a different task per caller), greedy with the action stop strings,
as ``run_many`` makes them: k threads start together. Both modes run in the same process on the same
model (``max_batch_size`` 8 vs 1), so the ratio compares like with like; greedy decoding makes the
two modes generate the same tokens. A last row repeats the batch of 4 with the prefix cache off, to
show what reusing the system prompt's keys and values saves in a batch. Then a ReGRPO group: G
samples of one prompt at temperature 1 as one ``generate(n=G)`` call (one shared prefill, one batch)
against G calls run one at a time (sampled tokens differ, so tokens/s is the fair ratio).

    .venv/bin/python benchmarks/batched_generation.py            # about 3 minutes on a 2-core CPU
    .venv/bin/python benchmarks/batched_generation.py --max-new-tokens 48
"""

from __future__ import annotations

import argparse
import threading
import time

from PIL import Image

from regrpo.agent.actions import ACTION_STOP_STRINGS
from regrpo.agent.local import LocalPolicy
from regrpo.agent.prompts import render_system_prompt, render_task
from regrpo.tasks.suite import builtin_suite
from regrpo.tools import default_tools
from regrpo.tools.images import ImageInfo


def step_chats(k: int) -> list[list[dict[str, str]]]:
    """The first step of k suite tasks, as the agent loop renders it."""
    system = render_system_prompt(default_tools())
    chats = []
    tasks = builtin_suite(n=max(12, k))[:k]
    if len(tasks) < k:  # the sweep's rows must be k distinct calls, or the table says less than it shows
        raise SystemExit(f"the suite gave {len(tasks)} tasks for {k} calls")
    for task in tasks:
        infos = []
        for number, path in enumerate(task.images):
            with Image.open(path) as image:
                infos.append(ImageInfo(f"img_{number}", image.width, image.height, "user"))
        chats.append(
            [
                {"role": "system", "content": system},
                {"role": "user", "content": render_task(task.question, infos)},
            ]
        )
    return chats


def concurrent_calls(
    policy: LocalPolicy, chats: list[list[dict[str, str]]], max_new_tokens: int
) -> tuple[float, int]:
    """Wall seconds for all calls started together, and the tokens they generated."""
    tokens = [0] * len(chats)

    def call(i: int) -> None:
        (completion,) = policy.generate(chats[i], max_new_tokens=max_new_tokens, stop=ACTION_STOP_STRINGS)
        tokens[i] = len(completion.token_ids)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(chats))]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, sum(tokens)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--group-size", type=int, default=5, help="G of the ReGRPO group row")
    args = parser.parse_args()

    policy = LocalPolicy(max_batch_size=max(args.ks))
    queue = policy._queue  # switch modes on one loaded model: max_batch_size is this queue's max_rows
    chats = step_chats(max(args.ks))
    print(
        f"system prompt + task: {len(policy.encode_chat(chats[0]))} tokens; ≤{args.max_new_tokens} new tokens"
    )
    policy.generate(chats[0], max_new_tokens=1)  # warm-up; fills the prefix cache

    print("| k calls | one at a time | batched | batched / one at a time | tokens | batches |")
    print("|---:|---:|---:|---:|---:|---|")
    for k in args.ks:
        queue.max_rows = 1
        serial, serial_tokens = concurrent_calls(policy, chats[:k], args.max_new_tokens)
        queue.max_rows = max(args.ks)
        before, split = len(queue.batch_sizes), queue.split_batches
        batched, tokens = concurrent_calls(policy, chats[:k], args.max_new_tokens)
        sizes = ",".join(map(str, queue.batch_sizes[before:]))
        if queue.split_batches > split:  # a batch failed and ran request by request (logged)
            sizes += f" ({queue.split_batches - split} split)"
        print(
            f"| {k} | {serial:.1f} s | {batched:.1f} s | {batched / serial:.2f} × | "
            f"{tokens} (alone: {serial_tokens}) | {sizes} |"
        )

    k = 4 if 4 in args.ks else max(args.ks)
    policy.prefix_cache = False
    uncached, _ = concurrent_calls(policy, chats[:k], args.max_new_tokens)
    policy.prefix_cache = True
    cached, _ = concurrent_calls(policy, chats[:k], args.max_new_tokens)
    print(f"\nbatch of {k}: prefix cache off {uncached:.1f} s, on {cached:.1f} s ({cached / uncached:.2f} ×)")

    group = args.group_size
    queue.max_rows = max(args.ks)
    started = time.perf_counter()
    completions = policy.generate(
        chats[0], n=group, temperature=1.0, max_new_tokens=args.max_new_tokens, stop=ACTION_STOP_STRINGS
    )
    together, together_tokens = time.perf_counter() - started, sum(len(c.token_ids) for c in completions)
    started = time.perf_counter()
    alone_tokens = 0
    for _ in range(group):
        (completion,) = policy.generate(
            chats[0], temperature=1.0, max_new_tokens=args.max_new_tokens, stop=ACTION_STOP_STRINGS
        )
        alone_tokens += len(completion.token_ids)
    alone = time.perf_counter() - started
    print(
        f"\nReGRPO group G={group}: generate(n={group}) {together:.1f} s ({together_tokens} tokens, "
        f"{together_tokens / together:.1f} tok/s); {group} calls one at a time {alone:.1f} s "
        f"({alone_tokens} tokens, {alone_tokens / alone:.1f} tok/s); tokens/s ratio "
        f"{(together_tokens / together) / (alone_tokens / alone):.2f} ×"
    )


if __name__ == "__main__":
    main()
