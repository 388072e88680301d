"""SmolLM2-135M on this machine: load, prompt size, prefill, decode, and what the prefix cache saves.

Every figure in the "model" table of docs/performance.md comes from this script. Ratios compare
variants measured in the same run (float32 vs bfloat16 decode, raw-schema vs signature prompt,
with vs without the system-prompt KV cache).

    .venv/bin/python benchmarks/model_speed.py            # about 3 minutes on a 2-core CPU
    .venv/bin/python benchmarks/model_speed.py --repeats 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch

from regrpo.agent.actions import ACTION_STOP_STRINGS
from regrpo.agent.local import LocalPolicy
from regrpo.agent.prompts import render_system_prompt
from regrpo.tools import default_tools


def median_seconds(work: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def decode_ms_per_token(policy: LocalPolicy, dtype: torch.dtype, repeats: int) -> float:
    """Greedy decode cost per token: (64 tokens − 1 token) / 63, on a short prompt."""
    model = policy.model.to(dtype)
    ids = torch.tensor([policy.encode_chat([{"role": "user", "content": "Tell me a story."}])])

    def run(tokens: int) -> Callable[[], object]:
        return lambda: model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            max_new_tokens=tokens,
            min_new_tokens=tokens,
        )

    with torch.inference_mode():
        run(2)()  # warm-up
        seconds = median_seconds(run(64), repeats) - median_seconds(run(1), repeats)
    policy.model.to(torch.float32)
    return seconds / 63 * 1000


def raw_schema_prompt() -> str:
    tools = default_tools()
    specs = [
        json.dumps(
            {"name": t.name, "description": t.description, "parameters": t.parameters_schema()},
            separators=(",", ":"),
        )
        for t in tools
    ]
    return render_system_prompt(tools).replace(
        "\n".join(line for line in render_system_prompt(tools).splitlines() if line.startswith("- ")),
        "<tools>\n" + "\n".join(specs) + "\n</tools>",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows: list[tuple[str, str, str]] = []

    started = time.perf_counter()
    policy = LocalPolicy(prefix_cache=False)
    rows.append(
        (
            "load LocalPolicy() (cache present; importing transformers included)",
            f"{time.perf_counter() - started:.1f} s",
            "",
        )
    )

    fp32 = decode_ms_per_token(policy, torch.float32, args.repeats)
    bf16 = decode_ms_per_token(policy, torch.bfloat16, args.repeats)
    rows.append(("decode, float32, batch 1", f"{fp32:.0f} ms/token", "1 ×"))
    rows.append(("decode, bfloat16, batch 1", f"{bf16:.0f} ms/token", f"{bf16 / fp32:.2f} × float32"))

    task = {"role": "user", "content": "What is 17*23?"}
    prompts = {
        "signature lines (shipped)": render_system_prompt(default_tools()),
        "raw JSON schemas": raw_schema_prompt(),
    }
    prefill = {}
    for name, system in prompts.items():
        chat = [{"role": "system", "content": system}, task]
        tokens = len(policy.encode_chat(chat))
        prefill[name] = median_seconds(
            lambda chat=chat: policy.generate(chat, max_new_tokens=1), args.repeats
        )
        rows.append((f"system prompt, {name}", f"{tokens} tokens, {prefill[name]:.2f} s to first token", ""))
    rows[-1] = (
        *rows[-1][:2],
        f"{prefill['raw JSON schemas'] / prefill['signature lines (shipped)']:.1f} × shipped",
    )

    chat = [{"role": "system", "content": prompts["signature lines (shipped)"]}, task]
    for n in (1, 4):

        def step(n: int = n) -> object:
            return policy.generate(
                chat, n=n, temperature=1.0 if n > 1 else 0.0, max_new_tokens=32, stop=ACTION_STOP_STRINGS
            )

        policy.prefix_cache = False
        without = median_seconds(step, args.repeats)
        policy.prefix_cache = True
        step()  # fills the cache
        with_cache = median_seconds(step, args.repeats)
        rows.append((f"step, n={n}, ≤32 new tokens, no prefix cache", f"{without:.2f} s", "1 ×"))
        rows.append(
            (
                f"step, n={n}, ≤32 new tokens, system-prompt KV cache",
                f"{with_cache:.2f} s",
                f"{with_cache / without:.2f} ×",
            )
        )

    torch.manual_seed(0)
    completion = policy.generate(chat, n=1, temperature=1.0, max_new_tokens=32)[0]
    prompt = policy.encode_chat(chat)
    with torch.inference_mode():
        logits = policy.model(torch.tensor([prompt + completion.token_ids])).logits[0, len(prompt) - 1 : -1]
    fresh = logits.float().log_softmax(-1).gather(-1, torch.tensor(completion.token_ids)[:, None]).squeeze(-1)
    gap = (fresh - torch.tensor(completion.logprobs)).abs().max().item()
    rows.append(("log-probs from generate (cached prefix) vs fresh forward pass", f"max |Δ| {gap:.1e}", ""))

    print("| measurement | value | ratio |\n|---|---|---|")
    for row in rows:
        print(f"| {' | '.join(row)} |")
    print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.repeats}")


if __name__ == "__main__":
    main()
