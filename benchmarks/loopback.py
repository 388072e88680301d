"""Helpers the server benchmarks share: servers in child processes on loopback, and percentiles.

Imported by the scripts beside it (``python benchmarks/<script>.py`` puts this folder on the path).
"""

from __future__ import annotations

import base64
import multiprocessing as mp
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx


def percentile(values: list[float], q: int) -> float:
    """The ``q``-th percentile (1-99) of ``values``; the value itself when there is one."""
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def start_server(
    ctx: Any, serve: Callable[..., None], args: tuple[Any, ...], stop: Any, timeout_s: float = 300
) -> tuple[mp.process.BaseProcess, int]:
    """Start ``serve(*args, port_queue, stop)`` in a child process; return it and the port it reports."""
    queue = ctx.Queue()
    process = ctx.Process(target=serve, args=(*args, queue, stop), daemon=True)
    process.start()
    return process, queue.get(timeout=timeout_s)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_cli(args: list[str], health: str, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``regrpo <args> --port P`` and wait (up to 5 min) until ``health`` answers 200."""
    port = free_port()
    command = [str(Path(sys.executable).parent / "regrpo"), *args, "--port", str(port)]
    process = subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"regrpo {args[0]} exited with {process.returncode}; see {log}")
        try:
            if httpx.get(url + health, timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)  # a start-up poll in a benchmark script, not a test
    process.kill()
    raise RuntimeError(f"regrpo {args[0]} did not answer {health} within 5 min; see {log}")


def chat_content(task: Any) -> list[dict[str, Any]]:
    """A suite task as a user message's content: its question, then its images as data URLs."""
    parts: list[dict[str, Any]] = [{"type": "text", "text": task.question}]
    for path in task.images:
        png = base64.b64encode(Path(path).read_bytes()).decode()
        parts.append({"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}})
    return parts
