"""Health-check latency of both servers while they are abused (issue 14): quiet vs under attack.

Each server runs on loopback in its own process, with the connection limits it ships with
(:class:`~regrpo.server.limits.ConnectionLimits`):

* ``regrpo serve`` with a scripted policy (a test double: what is measured is the server, not a model);
* ``regrpo serve-model`` with the real SmolLM2-135M-Instruct.

A prober GETs the health route (``/healthz``, ``/health``) every 20 ms, first with nothing else going
on, then while the attack from the adversarial review runs against the same server: 60 KB ``model``
strings, 16k-character word runs, ~2 MiB bodies of ``{}`` items, deep nesting, lone surrogates,
huge ``n`` and seeds, 1 MiB unauthenticated ``/tokenize`` prompts, 8 blank 4000x4000 PNGs per request,
``--idle`` connections that never send a byte and 20 drip-fed request heads. The table gives the
probes' p50/p99/max latency in each phase, the p99 ratio (attack / quiet), the chats per second a
well-behaved client beside them got answered (and its failures), how many attack requests were
answered with a status >= 500 and how many got no answer in 60 s (hangs). The bound this is held
to is in docs/performance.md. Usage::

    python benchmarks/health_under_abuse.py [--copies 3] [--repeat 10] [--idle 200] [--check] [--max-ms 500]

With ``--check`` the script exits 1 when the full attack breaks the bound: health
p99 over ``BOUND_P99_S``, any probe over ``--max-ms`` (default ``BOUND_MAX_S``) or missed, any
status >= 500, any hang. ``.ci/run`` runs it that way with ``--max-ms 1000`` (docs/performance.md).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import multiprocessing as mp
import tempfile
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path

import httpx
from loopback import percentile, start_server
from PIL import Image
from rich.console import Console
from rich.table import Table

KEY = "sk-bench"
PROBE_EVERY_S = 0.02
QUIET_S = 5.0
BOUND_P99_S = 0.150
"""The stated bound (docs/performance.md): health p99 under the full attack."""
BOUND_MAX_S = 0.500
"""The stated bound on the slowest health probe under the full attack."""


@dataclass
class Phase:
    """What the prober saw during one phase, and how the attack's requests were answered."""

    latencies: list[float]
    missed: int
    server_errors: int
    hangs: int
    chats_per_s: float
    chat_failures: int
    sent: int = 0


def _agent_app(trace_dir: str):
    from regrpo import Agent, ScriptedPolicy
    from regrpo.server.app import build_agent_app
    from regrpo.server.config import ServerConfig
    from regrpo.tools.calculator import calculator
    from regrpo.traces import TraceStore

    policy = ScriptedPolicy(["<answer>42</answer>"], cycle=True)  # test double: the server is measured
    agent = Agent(policy, tools=[calculator], store=TraceStore(Path(trace_dir) / "traces.sqlite"))
    return build_agent_app(agent, ServerConfig(api_keys=(KEY,)))


def _model_app():
    from regrpo.agent.local import LocalPolicy
    from regrpo.server.model_server import build_model_app

    return build_model_app(LocalPolicy(), api_key=KEY)


def _serve(kind: str, trace_dir: str, port_out: mp.Queue, stop: mp.Event) -> None:
    """Child process: serve one app on a free port, report the port, run until ``stop`` is set."""
    import logging

    from regrpo.server.background import start_in_thread

    logging.getLogger("regrpo.server").setLevel(logging.CRITICAL)
    app = _agent_app(trace_dir) if kind == "agent" else _model_app()
    with start_in_thread(app) as server:
        port_out.put(server.port)
        stop.wait()


def _blank_png(side: int = 4000) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), "white").save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _attack_bodies(kind: str) -> list[tuple[str, str, bytes]]:
    """(label, path, body) of every hostile request in one round, for the server ``kind``."""

    def chat(**extra: object) -> dict:
        return {
            "model": "regrpo-agent",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 1,
            **extra,
        }

    chats = "/v1/chat/completions"
    bodies: list[tuple[str, str, object]] = [
        ("60 KB model", chats, chat(model="m" * 60_000)),
        ("16k word run", chats, chat(model="a" * 16_000 + "/")),
        ("300k {} items", chats, {"messages": [{}] * 300_000}),
        ("deep nesting", chats, "[" * 30_000 + "]" * 30_000),
        ("lone surrogate", chats, '{"messages": [{"role": "user", "content": "\\ud800"}]}'),
        (
            "surrogate, stream",
            chats,
            '{"stream": true, "messages": [{"role": "user", "content": "\\ud800"}]}',
        ),
        ("n=64", chats, chat(n=64)),
        ("seed 2**70", chats, chat(seed=2**70)),
    ]
    if kind == "agent":
        parts = [{"type": "text", "text": "read"}] + [
            {"type": "image_url", "image_url": {"url": _blank_png()}}
        ] * 8
        image_chat = {"model": "regrpo-agent", "messages": [{"role": "user", "content": parts}]}
        bodies.append(("8 PNGs 4000x4000", chats, image_chat))
    else:
        bodies.append(("1 MiB /tokenize", "/tokenize", {"prompt": "word " * 200_000}))
    encoded = []
    for label, path, body in bodies:
        raw = body if isinstance(body, str) else json.dumps(body)
        encoded.append((label, path, raw.encode("utf-8", "surrogatepass")))
    return encoded


async def _probe(url: str, path: str, stop: asyncio.Event) -> tuple[list[float], int]:
    """Latencies of health GETs every ``PROBE_EVERY_S`` until ``stop``; and how many got no answer."""
    latencies: list[float] = []
    missed = 0
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                response = await client.get(path)
                if response.status_code != 200:
                    missed += 1
            except httpx.HTTPError:
                missed += 1
            latencies.append(time.perf_counter() - started)
            await asyncio.sleep(PROBE_EVERY_S)
    return latencies, missed


async def _hold_idle(port: int, count: int, release: asyncio.Event) -> None:
    """Open ``count`` connections that send nothing, plus 20 that drip a request head a byte at a time."""
    writers = []
    for _ in range(count):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writers.append(writer)

    async def drip() -> None:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\n":
                if release.is_set():
                    break
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.5)
            writer.close()
        except OSError:
            pass  # the server closing a drip-fed connection is the point

    drips = [asyncio.create_task(drip()) for _ in range(20)]
    await release.wait()
    for writer in writers:
        writer.close()
    await asyncio.gather(*drips)


async def _send_all(url: str, requests: list[tuple[str, bytes]]) -> tuple[int, int]:
    """POST every (path, body) at once; (answers >= 500, requests without an answer in 60 s)."""
    server_errors = hangs = 0
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as client:

        async def send(path: str, body: bytes) -> None:
            nonlocal server_errors, hangs
            try:
                response = await client.post(path, content=body)
                server_errors += response.status_code >= 500
            except httpx.TimeoutException:
                hangs += 1

        await asyncio.gather(*(send(path, body) for path, body in requests))
    return server_errors, hangs


async def _chat(url: str, stop: asyncio.Event) -> tuple[int, int]:
    """A well-behaved client: one valid chat after another until ``stop``; (answered, failed)."""
    body = {
        "model": "regrpo-agent",
        "messages": [{"role": "user", "content": "What is 6*7?"}],
        "max_tokens": 1,
    }
    answered = failed = 0
    headers = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as client:
        served = (await client.get("/v1/models")).json()["data"][0]["id"]
        body["model"] = served
        while not stop.is_set():
            try:
                ok = (await client.post("/v1/chat/completions", json=body)).status_code == 200
            except httpx.HTTPError:
                ok = False
            answered, failed = answered + ok, failed + (not ok)
    return answered, failed


async def _probed(url: str, kind: str, attack: Awaitable[tuple[int, int]]) -> Phase:
    """Probe the health route, and chat as a well-behaved client, while ``attack`` runs."""
    stop = asyncio.Event()
    prober = asyncio.create_task(_probe(url, "/healthz" if kind == "agent" else "/health", stop))
    chatter = asyncio.create_task(_chat(url, stop))
    started = time.perf_counter()
    server_errors, hangs = await attack
    stop.set()
    latencies, missed = await prober
    answered, failed = await chatter
    elapsed = time.perf_counter() - started
    return Phase(latencies, missed, server_errors, hangs, answered / elapsed, failed)


async def _measure(url: str, port: int, kind: str, copies: int, repeat: int, idle: int) -> dict[str, Phase]:
    """Quiet; each attack alone (``copies`` at once); all of them ``repeat`` times, idle connections held."""
    bodies = _attack_bodies(kind)

    async def quiet() -> tuple[int, int]:
        await asyncio.sleep(QUIET_S)
        return 0, 0

    async def everything() -> tuple[int, int]:
        release = asyncio.Event()
        holder = asyncio.create_task(_hold_idle(port, idle, release))
        totals = [0, 0]
        for _ in range(repeat):
            for i, found in enumerate(
                await _send_all(url, [(path, body) for _, path, body in bodies] * copies)
            ):
                totals[i] += found
        release.set()
        await holder
        return totals[0], totals[1]

    phases = {"quiet": await _probed(url, kind, quiet())}
    for label, path, body in bodies:
        phases[label] = await _probed(url, kind, _send_all(url, [(path, body)] * copies))
        phases[label].sent = copies
    phases[_full_attack(idle)] = await _probed(url, kind, everything())
    phases[_full_attack(idle)].sent = repeat * copies * len(bodies)
    return phases


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies", type=int, default=3, help="copies of each attack request sent at once")
    parser.add_argument("--repeat", type=int, default=10, help="times the whole attack is sent, all at once")
    parser.add_argument("--idle", type=int, default=200, help="connections held open without a byte")
    parser.add_argument("--check", action="store_true", help="exit 1 when the full attack breaks the bound")
    parser.add_argument(
        "--max-ms", type=float, default=BOUND_MAX_S * 1e3, help="the bound on the slowest health probe, in ms"
    )
    args = parser.parse_args()
    console = Console(width=150)
    broken: list[str] = []
    ctx = mp.get_context("spawn")
    for kind, name in (("agent", "regrpo serve"), ("model", "regrpo serve-model")):
        stop = ctx.Event()
        with tempfile.TemporaryDirectory() as trace_dir:
            process, port = start_server(ctx, _serve, (kind, trace_dir), stop)
            try:
                phases = asyncio.run(
                    _measure(f"http://127.0.0.1:{port}", port, kind, args.copies, args.repeat, args.idle)
                )
            finally:
                stop.set()
                process.join(30)
        table = Table(title=f"{name}: health-check latency, quiet and under each attack")
        columns = (
            "phase",
            "probes",
            "p50 ms",
            "p99 ms",
            "max ms",
            "missed",
            "p99 / quiet",
            "chats/s",
            "chat errors",
            "attack sent",
            ">= 500",
            "hangs",
        )
        for column in columns:
            table.add_column(column, justify="right", no_wrap=True)
        quiet_p99 = percentile(phases["quiet"].latencies, 99)
        for label, phase in phases.items():
            p99 = percentile(phase.latencies, 99)
            table.add_row(
                label,
                str(len(phase.latencies)),
                f"{percentile(phase.latencies, 50) * 1e3:.1f}",
                f"{p99 * 1e3:.1f}",
                f"{max(phase.latencies) * 1e3:.1f}",
                str(phase.missed),
                f"{p99 / quiet_p99:.1f}x",
                f"{phase.chats_per_s:.1f}",
                str(phase.chat_failures),
                str(phase.sent),
                str(phase.server_errors),
                str(phase.hangs),
            )
        console.print(table)
        full_attack = phases[_full_attack(args.idle)]
        broken += [f"{name}: {why}" for why in _bound_broken(full_attack, args.max_ms / 1e3)]
    for why in broken:
        console.print(f"[red]bound broken[/red] {why}")
    if not broken:
        bound = f"p99 <= {BOUND_P99_S * 1e3:.0f} ms, max <= {args.max_ms:.0f} ms"
        console.print(f"bound held: {bound}, no probe missed, no status >= 500, no hang")
    return 1 if broken and args.check else 0


def _full_attack(idle: int) -> str:
    """The label of the phase that sends every attack at once beside ``idle`` silent connections."""
    return f"all + {idle} idle"


def _bound_broken(phase: Phase, max_s: float) -> list[str]:
    """Each way one phase breaks the bound (p99, max_s on the slowest probe), in words (empty: held)."""
    p99, slowest = percentile(phase.latencies, 99), max(phase.latencies)
    checks = [
        (p99 > BOUND_P99_S, f"health p99 {p99 * 1e3:.1f} ms > {BOUND_P99_S * 1e3:.0f} ms"),
        (slowest > max_s, f"slowest probe {slowest * 1e3:.1f} ms > {max_s * 1e3:.0f} ms"),
        (phase.missed > 0, f"{phase.missed} probes missed"),
        (phase.server_errors > 0, f"{phase.server_errors} attack requests answered >= 500"),
        (phase.hangs > 0, f"{phase.hangs} attack requests hung"),
    ]
    return [why for failed, why in checks if failed]


if __name__ == "__main__":
    raise SystemExit(main())
