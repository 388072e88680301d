"""``regrpo serve`` with the real in-process model: requests/s at 1 and 8 clients, batched and not.

Issue 12's serving row. ``regrpo serve`` runs in its own process with SmolLM2-135M and the shipped
warm start (the default), ``--max-concurrency 8``; each request is a held-out suite task (question
and images as data URLs), a whole episode of at most ``--max-steps`` turns of ``--max-new-tokens``.
Three cells, each on a fresh server and the same ``--requests`` tasks:

* batched engine (``--max-batch-size 8``, the default), 1 client at a time: the baseline;
* batched engine, 8 clients at once: concurrent episodes share forward passes;
* one call at a time (``--max-batch-size 1``, the engine before batching), 8 clients at once.

Prints requests/s, p50/p90 latency and the ratios against the baseline, from one run. Not a timed
test. Usage::

    python benchmarks/serve_local_model.py [--requests 8] [--max-steps 2] [--max-new-tokens 48]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from loopback import chat_content, percentile, start_cli
from rich.console import Console
from rich.table import Table

KEY = "sk-bench"


def _episode(url: str, task: Any) -> tuple[float, bool, int]:
    """One request: its latency, whether the answer was right, and the model turns it took."""
    started = time.perf_counter()
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=1800) as client:
        reply = client.post(
            "/v1/chat/completions",
            json={"model": "regrpo-agent", "messages": [{"role": "user", "content": chat_content(task)}]},
        )
    reply.raise_for_status()
    body = reply.json()
    return (
        time.perf_counter() - started,
        task.check(body["choices"][0]["message"]["content"]),
        len(body["regrpo"]["steps"]),
    )


def _cell(tasks: list[Any], batch: int, clients: int, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """A fresh server with ``--max-batch-size batch``, sent every task by ``clients`` at once."""
    name = f"b{batch}-c{clients}"
    server, url = start_cli(
        [
            *("serve", "--api-key", KEY, "--max-concurrency", "8", "--max-batch-size", str(batch)),
            *("--max-steps", str(args.max_steps), "--max-new-tokens", str(args.max_new_tokens)),
            *("--store", str(root / f"{name}.sqlite"), "--request-timeout-s", "1800"),
        ],
        "/healthz",
        root / f"{name}.log",
    )
    try:
        started = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            done = list(pool.map(lambda task: _episode(url, task), tasks))
        wall = time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(timeout=60)
    latencies = [d[0] for d in done]
    return {
        "batch": batch,
        "clients": clients,
        "wall": wall,
        "rps": len(tasks) / wall,
        "p50": percentile(latencies, 50),
        "p90": percentile(latencies, 90),
        "solved": sum(d[1] for d in done),
        "turns": sum(d[2] for d in done),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=8, help="held-out tasks sent in each cell")
    parser.add_argument("--max-steps", type=int, default=2, help="model turns per episode")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    args = parser.parse_args()

    from regrpo.tasks.suite import builtin_suite, split

    _, held_out = split(builtin_suite(n=480, seed=0, holdout_fraction=0.25), 0.25, 0)  # `eval`'s held-out
    tasks = held_out[: args.requests]
    with tempfile.TemporaryDirectory() as tmp:
        cells = [_cell(tasks, batch, clients, args, Path(tmp)) for batch, clients in ((8, 1), (8, 8), (1, 8))]
    base = cells[0]["rps"]
    table = Table(title=f"regrpo serve, real SmolLM2-135M + warm start, {args.requests} episodes per cell")
    for column in (
        "engine",
        "clients",
        "wall s",
        "req/s",
        "p50 s",
        "p90 s",
        "vs 1 client",
        "solved",
        "turns",
    ):
        table.add_column(column, justify="left" if column == "engine" else "right")
    for cell in cells:
        engine = "batched (8 rows)" if cell["batch"] > 1 else "one call at a time"
        table.add_row(
            engine,
            str(cell["clients"]),
            f"{cell['wall']:.1f}",
            f"{cell['rps']:.3f}",
            f"{cell['p50']:.1f}",
            f"{cell['p90']:.1f}",
            f"{cell['rps'] / base:.2f} ×",
            str(cell["solved"]),
            str(cell["turns"]),
        )
    Console(width=140).print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
