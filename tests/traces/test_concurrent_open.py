"""Several processes opening one new SQLite trace file at the same moment (torchrun's ranks do).

SQLite answers some of those races "database is locked" at once, without waiting in its busy
handler (seen in CI: the data-parallel example's rank 0 failed to open the store). Each child here
imports the store, says "ready" and blocks on stdin; when all are ready the parent releases them
together, and every one must open the file and write to it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from regrpo.traces import open_store

pytestmark = pytest.mark.slow

_CHILD = """
import sys
from regrpo.traces.store import TraceStore
print("ready", flush=True)
sys.stdin.readline()
store = TraceStore(sys.argv[1])
store.put_image(sys.argv[2], b"png bytes")
print("opened", flush=True)
"""

_PROCESSES = 6
_ROUNDS = 4


def test_processes_opening_one_new_file_at_once_all_succeed(tmp_path: Path) -> None:
    for round_index in range(_ROUNDS):
        path = tmp_path / f"round{round_index}" / "traces.sqlite"
        children = [
            subprocess.Popen(
                [sys.executable, "-c", _CHILD, str(path), _image_key(index)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for index in range(_PROCESSES)
        ]
        for child in children:
            assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        results = [child.communicate(timeout=120) for child in children]
        failures = [err for child, (_, err) in zip(children, results, strict=True) if child.returncode]
        assert not failures, failures[0]
        assert all(out.strip() == "opened" for out, _ in results)
        with open_store(path) as store:
            assert all(store.has_image(_image_key(index)) for index in range(_PROCESSES))


def _image_key(index: int) -> str:
    return f"{index:064x}"
