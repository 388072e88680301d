"""Evaluation throughput: episodes per minute at concurrency k vs 1, on the built-in suite, real model.

The same tasks, the same policy (SmolLM2-135M with the shipped warm start, greedy, the built-in tools)
and the same budgets are evaluated with ``EvalOptions(concurrency=1)`` and then at each larger k, in
one process: concurrent episodes' model calls coalesce into batched forward passes
(``LocalPolicy(max_batch_size=max k)``), and tool time overlaps model time. Greedy decoding makes
every run generate the same episodes (the table's success column checks it), so the ratio compares
like with like. Traces go to a throwaway store.

    .venv/bin/python benchmarks/eval_throughput.py                  # about 8 minutes on a 2-core CPU
    .venv/bin/python benchmarks/eval_throughput.py --tasks 4 --max-steps 2 --ks 1 4
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from regrpo.agent.adapters import WARM_START
from regrpo.agent.local import LocalPolicy
from regrpo.evaluation.runner import EvalOptions, evaluate
from regrpo.tasks.suite import builtin_suite, split
from regrpo.traces import TraceStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=8, help="held-out suite tasks per run")
    parser.add_argument("--max-steps", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument(
        "--ks", type=int, nargs="+", default=[1, 8], help="concurrencies (the first is the base)"
    )
    args = parser.parse_args()

    _, held_out = split(builtin_suite(n=max(48, 4 * args.tasks)), 0.25, seed=0)
    tasks = held_out[: args.tasks]
    policy = LocalPolicy(max_batch_size=max(args.ks))
    print(
        f"{len(tasks)} held-out tasks, ≤{args.max_steps} turns of ≤{args.max_new_tokens} tokens, warm start"
    )
    print("| concurrency | wall s | episodes/min | vs first row | success | model turns |")
    print("|---:|---:|---:|---:|---:|---:|")
    base = None
    with tempfile.TemporaryDirectory() as folder:
        for k in args.ks:
            options = EvalOptions(max_steps=args.max_steps, max_new_tokens=args.max_new_tokens, concurrency=k)
            store = TraceStore(Path(folder) / f"traces-{k}.sqlite")
            started = time.perf_counter()
            report = evaluate(policy, tasks, store=store, options=options, adapter=WARM_START, progress=False)
            wall = time.perf_counter() - started
            rate = len(tasks) / wall * 60
            base = base or rate
            turns = sum(e.steps for e in report.episodes)
            print(
                f"| {k} | {wall:.1f} | {rate:.2f} | {rate / base:.2f} × | "
                f"{report.overall.success_rate:.0%} | {turns} |"
            )
            store.close()


if __name__ == "__main__":
    main()
