"""Durability: an episode survives ``kill -9`` of the process that ran it.

Each test runs a real agent (scripted policy, real calculator, a real SQLite file or PostgreSQL
database: ``store_location``, tests/traces/conftest.py) in a child process, waits until the child
says how far it got (a line on its stdout), SIGKILLs it and reads the store from this process. No
sleeps: the child's own output is the only clock.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from regrpo.errors import ErrorType
from regrpo.traces import Answer, ToolCall, open_store

pytestmark = pytest.mark.slow

_SCRIPT_HEAD = """
import sys
from regrpo.agent.loop import Agent
from regrpo.agent.scripted import ScriptedPolicy
from regrpo.traces import open_store

FAIL = '<tool_call>{"name": "calculator", "arguments": {"expression": "17*/23"}}</tool_call>'
REFLECT_AND_FIX = (
    '<reflection>{"error_type": "ArgInvalid", "evidence": "cannot parse expression 17*/23", '
    '"fix_plan": "remove the stray slash"}</reflection>'
    '<tool_call>{"name": "calculator", "arguments": {"expression": "17*23"}}</tool_call>'
)
"""

_FINISHES_THEN_WAITS = (
    _SCRIPT_HEAD
    + """
agent = Agent(ScriptedPolicy([FAIL, REFLECT_AND_FIX, "<answer>391</answer>"]), store=open_store(sys.argv[1]))
result = agent.run("What is 17*23?")
print(result.trace_id, flush=True)
sys.stdin.readline()  # block until killed; the store is never closed
"""
)

_STOPS_IN_THE_THIRD_TURN = (
    _SCRIPT_HEAD
    + """
def third_turn(chat):
    print("READY", flush=True)
    sys.stdin.readline()  # block here, mid-episode, until killed
    return "<answer>391</answer>"

agent = Agent(ScriptedPolicy([FAIL, REFLECT_AND_FIX, third_turn]), store=open_store(sys.argv[1]))
agent.run("What is 17*23?")
print("NOT KILLED", flush=True)
"""
)


def _run_and_kill(script: str, store_path: str, tmp_path: Path) -> str:
    """Start ``script``, return the first line it prints after SIGKILLing it."""
    stderr_path = tmp_path / "child.stderr"
    with stderr_path.open("w") as stderr:
        child = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(script), str(store_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    watchdog = threading.Timer(60, child.kill)  # a safety net should the child hang before printing
    watchdog.start()
    try:
        line = child.stdout.readline().strip()  # type: ignore[union-attr]
        child.kill()  # SIGKILL: no atexit, no finally, no close()
        child.wait()
    finally:
        watchdog.cancel()
        child.stdin.close()  # type: ignore[union-attr]
        child.stdout.close()  # type: ignore[union-attr]
    assert line, f"the child printed nothing; its stderr:\n{stderr_path.read_text()}"
    assert child.returncode == -signal.SIGKILL
    return line


def test_a_finished_episode_survives_sigkill(store_location: str, tmp_path: Path) -> None:
    path = store_location
    trace_id = _run_and_kill(_FINISHES_THEN_WAITS, path, tmp_path)

    with open_store(path) as store:
        assert store.trace_ids() == [trace_id]
        episode = store.get(trace_id)
    assert episode.status == "answered"
    assert episode.answer == "391"
    assert episode.ended_at is not None
    assert len(episode.steps) == 3
    failed, fixed, answered = episode.steps
    assert isinstance(failed.action, ToolCall) and failed.failed
    assert failed.observation.error_type is ErrorType.ARG_INVALID  # type: ignore[union-attr]
    assert fixed.reflection is not None
    assert fixed.reflection.error_type is ErrorType.ARG_INVALID
    assert fixed.reflection.fix_plan == "remove the stray slash"
    assert fixed.observation.output == 391  # type: ignore[union-attr]
    assert answered.action == Answer("391")
    assert [m.role for m in episode.messages] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
        "assistant",
    ]
    assert episode.usage.steps == 3 and episode.usage.reflections == 1


def test_an_episode_killed_mid_run_keeps_every_finished_step(store_location: str, tmp_path: Path) -> None:
    path = store_location
    assert _run_and_kill(_STOPS_IN_THE_THIRD_TURN, path, tmp_path) == "READY"

    with open_store(path) as store:
        [trace_id] = store.trace_ids()
        episode = store.get(trace_id)
        assert store.trace_ids(failures_only=True) == [trace_id]  # its failed first step is findable
    assert episode.status == "running"
    assert episode.ended_at is None and episode.answer is None
    assert [s.index for s in episode.steps] == [0, 1]
    assert episode.steps[0].failed and not episode.steps[1].failed
    assert episode.steps[1].reflection is not None
    assert episode.steps[1].observation.output == 391  # type: ignore[union-attr]
    # The messages so far: system, task, and two (assistant turn, observation) pairs; the third
    # turn was being generated when the process died, so it is not there.
    assert [m.role for m in episode.messages] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert episode.messages[1].content.startswith("What is 17*23?")
    assert episode.messages[3].content.startswith("<tool_response>Error: ")
    assert episode.messages[5].content.startswith("<tool_response>391")


_WRITES_EPISODES_FOREVER = (
    _SCRIPT_HEAD
    + """
agent = Agent(ScriptedPolicy([FAIL, REFLECT_AND_FIX, "<answer>391</answer>"], cycle=True),
              store=open_store(sys.argv[1]))
while True:  # until killed: each id is printed only once run() returned (the episode acknowledged)
    print(agent.run(f"What is 17*23? ({sys.argv[2]})").trace_id, flush=True)
"""
)


def test_writer_processes_and_a_reader_at_once_and_kill_9_loses_no_acknowledged_episode(
    store_location: str,
) -> None:
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(_WRITES_EPISODES_FOREVER), store_location, f"writer {w}"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for w in range(4)
    ]
    acknowledged: list[str] = []
    reads: list[int] = []
    watchdog = threading.Timer(120, lambda: [w.kill() for w in writers])
    watchdog.start()
    try:
        with open_store(store_location) as reader:
            for _ in range(5):  # the reader reads while the writers write: every episode it sees is whole
                for writer in writers:
                    acknowledged.append(writer.stdout.readline().strip())  # type: ignore[union-attr]
                reads.append(len(reader.trace_ids()))
                for episode in reader.episodes(failures_only=True):
                    assert episode.steps and episode.steps[0].failed
            for writer in writers:
                writer.kill()  # SIGKILL, mid-episode or between two
                writer.wait()
    finally:
        watchdog.cancel()
        for writer in writers:
            writer.stdout.close()  # type: ignore[union-attr]
    assert all(w.returncode == -signal.SIGKILL for w in writers)
    assert reads == sorted(reads) and reads[-1] >= 20  # the reader saw the store grow
    with open_store(store_location) as store:
        for trace_id in acknowledged:  # every episode whose run() returned is there, finished
            episode = store.get(trace_id)
            assert episode.status == "answered" and episode.answer == "391" and len(episode.steps) == 3
        assert set(acknowledged) <= set(store.trace_ids()) and len(set(acknowledged)) == 20
