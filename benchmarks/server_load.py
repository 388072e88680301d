"""Load on ``regrpo serve`` next to a bare Starlette endpoint: what the agent server adds per request.

Both servers run on loopback, each in its own process (so the client does not share their GIL):

* ``regrpo serve`` with a scripted policy that answers at once (no model cost), so what is measured
  is the server: auth, body limit, validation, admission, the episode loop and its durable trace
  writes (SQLite, WAL), metrics, and the response;
* a bare Starlette route that returns a JSON body of the same size.

For 1, 16 and 64 concurrent clients (``httpx.AsyncClient``), each server gets the same number of
requests; the table gives requests/s, p50 and p99 latency, and the overhead as a ratio (agent p50 /
bare p50). Not a timed test: numbers depend on the machine. Usage::

    python benchmarks/server_load.py [--requests 400] [--clients 1 16 64]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import tempfile
import time
from pathlib import Path

import httpx
from loopback import percentile, start_server
from rich.console import Console
from rich.table import Table

BODY = {"model": "regrpo-agent", "messages": [{"role": "user", "content": "What is 6*7?"}]}
KEY = "sk-bench"


def _agent_app(trace_dir: str):
    from regrpo import Agent, ScriptedPolicy
    from regrpo.server.app import build_agent_app
    from regrpo.server.config import ServerConfig
    from regrpo.tools.calculator import calculator
    from regrpo.traces import TraceStore

    agent = Agent(
        ScriptedPolicy(
            ["<answer>42</answer>"], cycle=True
        ),  # a test double: measures the server, not a model
        tools=[calculator],
        store=TraceStore(Path(trace_dir) / "traces.sqlite"),
    )
    return build_agent_app(agent, ServerConfig(api_keys=(KEY,), max_concurrency=64, max_queue=256))


def _bare_app(size: int):
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    payload = b'{"padding": "' + b"x" * max(0, size - 15) + b'"}'

    async def chat(request: Request) -> Response:
        await request.body()
        return Response(payload, media_type="application/json")

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


def _serve(kind: str, arg: str, port_out: mp.Queue, stop: mp.Event) -> None:
    """Child process: serve one app on a free port, report the port, run until ``stop`` is set."""
    import logging

    from regrpo.server.app import start_in_thread

    logging.getLogger("regrpo.server").setLevel(logging.ERROR)
    app = _agent_app(arg) if kind == "agent" else _bare_app(int(arg))
    with start_in_thread(app) as server:
        port_out.put(server.port)
        stop.wait()


async def _load(url: str, clients: int, requests: int) -> tuple[float, list[float], int]:
    """(requests/s, latencies in s, failures) of ``requests`` POSTs from ``clients`` concurrent workers."""
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    headers = {"Authorization": f"Bearer {KEY}"}
    latencies: list[float] = []
    failures = 0
    remaining = iter(range(requests))
    async with httpx.AsyncClient(base_url=url, limits=limits, headers=headers, timeout=120) as client:
        for _ in range(min(requests, 2 * clients)):  # warm-up: connections, caches, SQLite pages
            await client.post("/v1/chat/completions", json=BODY)

        async def worker() -> None:
            nonlocal failures
            for _ in remaining:
                started = time.perf_counter()
                response = await client.post("/v1/chat/completions", json=BODY)
                latencies.append(time.perf_counter() - started)
                failures += response.status_code != 200

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - started
    return requests / elapsed, latencies, failures


def _row(clients: int, kind: str, measured: tuple[float, list[float], int], bare) -> list[str]:
    rps, latencies, failures = measured
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    agent = kind == "agent"
    return [
        str(clients),
        "regrpo serve" if agent else "bare",
        f"{rps:.0f}",
        f"{p50 * 1e3:.1f}",
        f"{p99 * 1e3:.1f}",
        str(failures),
        f"{p50 / percentile(bare[1], 50):.1f}x" if agent else "",
        f"{bare[0] / rps:.1f}x" if agent else "",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=400, help="requests per server per concurrency level")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16, 64])
    args = parser.parse_args()
    console = Console(width=120)

    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    processes = []
    with tempfile.TemporaryDirectory() as trace_dir:
        try:
            agent_process, agent_port = start_server(ctx, _serve, ("agent", trace_dir), stop)
            processes.append(agent_process)
            sample = httpx.post(
                f"http://127.0.0.1:{agent_port}/v1/chat/completions",
                json=BODY,
                headers={"Authorization": f"Bearer {KEY}"},
            )
            same_size = str(len(sample.content))  # the bare route answers a body of the same size
            bare_process, bare_port = start_server(ctx, _serve, ("bare", same_size), stop)
            processes.append(bare_process)
            ports = {"agent": agent_port, "bare": bare_port}

            title = f"regrpo serve vs a bare Starlette endpoint ({args.requests} requests per cell)"
            table = Table(title=title)
            columns = ("clients", "server", "req/s", "p50 ms", "p99 ms", "errors", "p50 ratio", "req/s ratio")
            for column in columns:
                table.add_column(column, justify="right", no_wrap=True)
            for clients in args.clients:
                bare = asyncio.run(_load(f"http://127.0.0.1:{ports['bare']}", clients, args.requests))
                agent = asyncio.run(_load(f"http://127.0.0.1:{ports['agent']}", clients, args.requests))
                table.add_row(*_row(clients, "bare", bare, bare))
                table.add_row(*_row(clients, "agent", agent, bare))
            console.print(table)
            console.print(f"response body: {len(sample.content)} bytes from both servers")
        finally:
            stop.set()
            for process in processes:
                process.join(30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
