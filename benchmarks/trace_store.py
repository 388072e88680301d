"""Trace-store throughput: SQLite vs PostgreSQL, with 1, 4 and 16 writer processes at once.

Each writer process records whole episodes the way the agent does (``TraceLogger``: a header, then
6 messages and 3 steps as they happen, then the finish: 12 committed writes per episode) for a fixed
time; then one reader process reads whole episodes back (``TraceStore.get``) for a fixed time. The
table gives episodes written per second over all writers, and episodes read per second, per backend,
and PostgreSQL / SQLite as a ratio in the same run. Both backends commit every write (SQLite: WAL,
``synchronous=NORMAL``; PostgreSQL: autocommit, its default ``synchronous_commit=on``).

    .venv/bin/python benchmarks/trace_store.py --postgres postgresql://user:password@127.0.0.1/postgres
    .venv/bin/python benchmarks/trace_store.py --postgres URL --writers 1 4 --seconds 3   # quicker

``--postgres`` needs a role that may create databases: the benchmark makes a fresh one and drops it.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

from rich.console import Console
from rich.table import Table

from regrpo.errors import ErrorType
from regrpo.traces import (
    Completion,
    Episode,
    Message,
    Observation,
    Step,
    ToolCall,
    TraceLogger,
    open_store,
)


def _episode(store, writer: int, index: int) -> None:
    log = TraceLogger(
        store,
        Episode(trace_id=f"w{writer}-{index}", task="What is 17*23?", started_at=time.time(), model="m"),
    )
    log.message(Message("system", "You are an agent. " * 40))
    log.message(Message("user", "What is 17*23?"))
    for step in range(3):
        ok = step > 0
        log.message(Message("assistant", '<tool_call>{"name": "calculator"}</tool_call>'))
        log.step(
            Step(
                index=step,
                prompt_messages=2 + 2 * step,
                completion=Completion(text="call", token_ids=list(range(40)), logprobs=[-0.1] * 40),
                action=ToolCall("calculator", {"expression": "17*23"}),
                observation=Observation(
                    ok=ok, content="391" if ok else "Error", error_type=None if ok else ErrorType.TIMEOUT
                ),
            )
        )
        if step < 2:
            log.message(Message("user", "<tool_response>391</tool_response>"))
    log.finish("answered", answer="391")


def _writer(where: str, writer: int, seconds: float, start, results) -> None:
    store = open_store(where)
    start.wait()
    deadline = time.perf_counter() + seconds
    count = 0
    while time.perf_counter() < deadline:
        _episode(store, writer, count)
        count += 1
    store.close()
    results.put(count)


def _reader(where: str, seconds: float, results) -> None:
    store = open_store(where)
    ids = store.trace_ids()
    deadline = time.perf_counter() + seconds
    count = 0
    while time.perf_counter() < deadline:
        store.get(ids[count % len(ids)])
        count += 1
    store.close()
    results.put(count)


def measure(where: str, writers: int, seconds: float) -> tuple[float, float]:
    """``(episodes written per second over all writers, episodes read per second by one reader)``."""
    context = mp.get_context("spawn")
    start, results = context.Barrier(writers), context.Queue()
    processes = [
        context.Process(target=_writer, args=(where, w, seconds, start, results)) for w in range(writers)
    ]
    for process in processes:
        process.start()
    written = sum(results.get() for _ in processes)
    for process in processes:
        process.join()
    reader = context.Process(target=_reader, args=(where, seconds, results))
    reader.start()
    read = results.get()
    reader.join()
    return written / seconds, read / seconds


def _fresh_postgres(admin_url: str) -> tuple[str, str]:
    import psycopg

    name = f"regrpo_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return name, urlsplit(admin_url)._replace(path=f"/{name}").geturl()


def _drop_postgres(admin_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", required=True, help="admin URL of a PostgreSQL server")
    parser.add_argument("--writers", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--seconds", type=float, default=5.0, help="writing time, and reading time, per run")
    args = parser.parse_args()

    table = Table(title=f"trace store, episodes/s ({args.seconds:g} s per run, 12 writes per episode)")
    for column in ("writers", "SQLite write", "PostgreSQL write", "PG / SQLite", "SQLite read", "PG read"):
        table.add_column(column, justify="right")
    for writers in args.writers:
        with tempfile.TemporaryDirectory() as folder:
            sqlite = measure(str(Path(folder) / "traces.sqlite"), writers, args.seconds)
        name, url = _fresh_postgres(args.postgres)
        try:
            postgres = measure(url, writers, args.seconds)
        finally:
            _drop_postgres(args.postgres, name)
        table.add_row(
            str(writers),
            f"{sqlite[0]:.0f}",
            f"{postgres[0]:.0f}",
            f"{postgres[0] / sqlite[0]:.2f} ×",
            f"{sqlite[1]:.0f}",
            f"{postgres[1]:.0f}",
        )
    Console().print(table)


if __name__ == "__main__":
    main()
