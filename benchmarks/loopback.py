"""Helpers the server benchmarks share: a server in a child process on loopback, and percentiles.

Imported by the scripts beside it (``python benchmarks/<script>.py`` puts this folder on the path).
"""

from __future__ import annotations

import multiprocessing as mp
import statistics
from collections.abc import Callable
from typing import Any


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
