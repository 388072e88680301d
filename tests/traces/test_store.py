"""``TraceStore`` and ``TraceLogger`` on real SQLite files: what goes in comes back, filtered and in order."""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
from pathlib import Path

import msgspec
import pytest

from regrpo.errors import ErrorType, TraceNotFoundError, TraceStoreError
from regrpo.traces import (
    Answer,
    Completion,
    Episode,
    Feedback,
    Message,
    Observation,
    Step,
    ToolCall,
    TraceLogger,
    TraceStore,
    open_store,
)


def _step(index: int, *, ok: bool = True) -> Step:
    observation = Observation(
        ok=ok,
        content="3" if ok else "Error (Timeout)",
        output=3 if ok else None,
        error_type=None if ok else ErrorType.TIMEOUT,
    )
    return Step(
        index=index,
        prompt_messages=2 + 2 * index,
        completion=Completion(text=f"call {index}"),
        action=ToolCall("add", {"a": index, "b": 1}),
        observation=observation,
    )


def _record(
    store: TraceStore,
    trace_id: str,
    started_at: float,
    *,
    steps: int = 2,
    fail_at: int | None = None,
    finish: bool = True,
) -> Episode:
    """Write an episode the way the agent does: header first, then messages and steps as they happen."""
    log = TraceLogger(
        store, Episode(trace_id=trace_id, task=f"task {trace_id}", started_at=started_at, model="scripted")
    )
    log.message(Message("system", "You are an agent."))
    log.message(Message("user", f"task {trace_id}"))
    for index in range(steps):
        log.message(Message("assistant", f"call {index}"))
        step = _step(index, ok=index != fail_at)
        log.step(step)
        log.message(Message("user", step.observation.content))  # type: ignore[union-attr]
    if finish:
        log.episode.usage.steps = steps
        log.finish("answered", answer=f"answer {trace_id}")
    return log.episode


# -- writing and reading one episode -------------------------------------------------------------------------


def test_an_episode_reads_back_as_it_was_written(store: TraceStore) -> None:
    written = _record(store, "ep1", 1000.0, steps=3, fail_at=1)
    read = store.get("ep1")
    assert read == written
    assert read.status == "answered" and read.answer == "answer ep1"
    assert read.ended_at is not None and read.usage.wall_s == read.ended_at - 1000.0
    assert [m.content for m in read.messages] == [
        "You are an agent.",
        "task ep1",
        "call 0",
        "3",
        "call 1",
        "Error (Timeout)",
        "call 2",
        "3",
    ]
    assert [s.index for s in read.steps] == [0, 1, 2]
    assert [s.failed for s in read.steps] == [False, True, False]
    assert store.get_header("ep1").steps == []  # the header alone: no messages, steps or feedback


def test_the_logger_writes_through_at_every_call(store: TraceStore) -> None:
    log = TraceLogger(store, Episode(trace_id="live", task="q", started_at=1.0, model="m"))
    assert store.get("live").status == "running"  # in the store before anything happened
    log.message(Message("user", "q"))
    assert [m.content for m in store.get("live").messages] == ["q"]
    log.step(_step(0, ok=False))
    assert store.get("live").steps == [_step(0, ok=False)]
    log.episode.metadata["seed"] = 3
    log.update_header()
    assert store.get("live").metadata == {"seed": 3}
    log.finish("error", error="RuntimeError: boom")
    assert (store.get("live").status, store.get("live").error) == ("error", "RuntimeError: boom")


def test_steps_and_messages_come_back_in_index_order_whatever_the_write_order(store: TraceStore) -> None:
    store.put_header(Episode(trace_id="x", task="q", started_at=1.0, model="m"))
    for index in (2, 0, 1):
        store.append_step("x", _step(index))
        store.append_message("x", index, Message("user", f"m{index}"))
    episode = store.get("x")
    assert [s.index for s in episode.steps] == [0, 1, 2]
    assert [m.content for m in episode.messages] == ["m0", "m1", "m2"]


def test_an_unknown_trace_id_raises_trace_not_found(store: TraceStore) -> None:
    _record(store, "known", 1.0)
    with pytest.raises(TraceNotFoundError) as caught:
        store.get("missing-id")
    assert str(caught.value) == f"no episode with trace id 'missing-id' in {store.path}"
    assert isinstance(caught.value, KeyError)  # so ``except KeyError`` works as for a dict
    assert isinstance(caught.value, TraceStoreError)
    with pytest.raises(KeyError):
        store.get_header("missing-id")


def test_feedback_is_appended_and_the_latest_reward_wins(store: TraceStore) -> None:
    _record(store, "ep", 1.0)
    store.add_feedback("ep", Feedback(reward=0.0))
    store.add_feedback("ep", Feedback(reward=1.0, answer="391"))
    store.add_feedback("ep", Feedback(answer="392"))
    episode = store.get("ep")
    assert [(f.reward, f.answer) for f in episode.feedback] == [(0.0, None), (1.0, "391"), (None, "392")]
    assert episode.reward == 1.0
    assert store.feedback("ep") == episode.feedback  # alone, without the messages and steps
    assert store.feedback("missing-id") == [] and store.get_header("ep").feedback == []


def test_feedback_for_an_unknown_episode_is_refused_and_not_stored(store: TraceStore) -> None:
    with pytest.raises(TraceNotFoundError, match="'ghost'"):
        store.add_feedback("ghost", Feedback(reward=1.0))
    assert store._rows("SELECT COUNT(*) FROM feedback") == [(0,)]  # the store's own SQL primitive


# -- listing and filtering -----------------------------------------------------------------------------------


@pytest.fixture
def three(store: TraceStore) -> TraceStore:
    """Three episodes: a clean one at t=1000, a failing one at t=2000, a clean one at t=3000."""
    _record(store, "c", 3000.0)
    _record(store, "a", 1000.0)
    _record(store, "b", 2000.0, fail_at=0)
    return store


def test_episodes_come_in_start_order(three: TraceStore) -> None:
    assert [e.trace_id for e in three.episodes()] == ["a", "b", "c"]
    assert three.trace_ids() == ["a", "b", "c"]
    assert len(three) == 3


@pytest.mark.parametrize(
    "since",
    [2000.0, 2000, dt.datetime.fromtimestamp(2000.0, tz=dt.UTC), dt.datetime.fromtimestamp(2000.0)],
    ids=["float", "int", "aware-datetime", "naive-local-datetime"],
)
def test_since_keeps_episodes_started_at_or_after_it(three: TraceStore, since: float | dt.datetime) -> None:
    assert [e.trace_id for e in three.episodes(since=since)] == ["b", "c"]


def test_failures_only_and_limit(three: TraceStore) -> None:
    assert [e.trace_id for e in three.episodes(failures_only=True)] == ["b"]
    assert [e.trace_id for e in three.episodes(limit=2)] == ["a", "b"]
    assert [e.trace_id for e in three.episodes(since=1500.0, limit=1)] == ["b"]
    assert list(three.episodes(since=2500.0, failures_only=True)) == []
    assert list(three.episodes(limit=0)) == []


def test_failures_only_finds_a_failure_in_an_episode_that_never_finished(store: TraceStore) -> None:
    # The header was written before the failed step and never again (the process died).
    _record(store, "died", 1.0, steps=2, fail_at=1, finish=False)
    assert store.get_header("died").status == "running"
    assert store.trace_ids(failures_only=True) == ["died"]


def test_an_errored_episode_counts_as_a_failure(store: TraceStore) -> None:
    log = TraceLogger(store, Episode(trace_id="crashed", task="q", started_at=1.0, model="m"))
    log.finish("error", error="ModelError: out of memory")
    _record(store, "fine", 2.0)
    assert store.trace_ids(failures_only=True) == ["crashed"]


# -- export --------------------------------------------------------------------------------------------------


def test_export_writes_one_json_episode_per_line(three: TraceStore, tmp_path: Path) -> None:
    target = tmp_path / "exports" / "traces.jsonl"  # the folder does not exist yet
    assert three.export_jsonl(target) == 3
    lines = target.read_bytes().splitlines()
    assert len(lines) == 3
    decoded = [msgspec.json.decode(line, type=Episode) for line in lines]
    assert decoded == list(three.episodes())
    assert sorted(p.name for p in target.parent.iterdir()) == ["traces.jsonl"]  # no temp file left


def test_export_filters_and_replaces_an_older_export(three: TraceStore, tmp_path: Path) -> None:
    target = tmp_path / "traces.jsonl"
    target.write_text("stale\n" * 10)
    assert three.export_jsonl(target, failures_only=True) == 1
    assert [msgspec.json.decode(line)["trace_id"] for line in target.read_bytes().splitlines()] == ["b"]
    assert three.export_jsonl(target, since=2500.0) == 1
    assert three.export_jsonl(target, since=9999.0) == 0
    assert target.read_bytes() == b""
    assert sorted(p.name for p in tmp_path.iterdir() if "jsonl" in p.name) == ["traces.jsonl"]


def test_a_corrupt_row_is_a_trace_store_error(three: TraceStore) -> None:
    three._write("UPDATE steps SET body = ? WHERE trace_id = 'c' AND idx = 1", (b"\xc1 not msgpack",))
    with pytest.raises(TraceStoreError, match="cannot decode episode 'c' in "):
        three.get("c")
    assert three.get("a").trace_id == "a"  # the other episodes still read


def test_a_failed_export_leaves_the_old_file_and_no_temp_file(three: TraceStore, tmp_path: Path) -> None:
    target = tmp_path / "traces.jsonl"
    target.write_text("previous export\n")
    # The last episode ("c") cannot be read, so "a" and "b" are already in the temp file when it fails.
    three._write("UPDATE messages SET body = ? WHERE trace_id = 'c' AND idx = 0", (b"\xc1",))
    with pytest.raises(TraceStoreError, match="'c'"):
        three.export_jsonl(target)
    assert target.read_text() == "previous export\n"
    assert sorted(p.name for p in tmp_path.iterdir() if "jsonl" in p.name) == ["traces.jsonl"]


# -- the file ------------------------------------------------------------------------------------------------


def test_a_reopened_store_sees_everything(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "traces.sqlite"  # folders are created
    with TraceStore(path) as first:
        written = _record(first, "ep", 1.0, steps=2)
        first.add_feedback("ep", Feedback(reward=0.5))
    with TraceStore(path, sync="full") as second:
        read = second.get("ep")
        assert read.steps == written.steps and read.messages == written.messages
        assert read.reward == 0.5
        assert len(second) == 1


def test_an_in_memory_store_works() -> None:
    with TraceStore(":memory:") as store:
        _record(store, "ep", 1.0)
        assert store.get("ep").answer == "answer ep"


def test_a_file_that_is_not_sqlite_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "notes.sqlite"
    garbage = b"these are my notes, not a database\n" * 200
    path.write_bytes(garbage)
    with pytest.raises(TraceStoreError) as caught:
        TraceStore(path)
    assert str(caught.value).startswith(f"cannot open trace store {str(path)!r}: ")
    assert "not a database" in str(caught.value)
    assert path.read_bytes() == garbage


def test_a_store_from_a_newer_schema_is_refused_naming_the_version(tmp_path: Path) -> None:
    path = tmp_path / "future.sqlite"
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version=99")
    db.close()
    with pytest.raises(TraceStoreError) as caught:
        TraceStore(path)
    message = str(caught.value)
    assert "trace schema version 99" in message and "reads version 1" in message
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 99  # not overwritten
    db.close()


def test_a_bad_sync_mode_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TraceStoreError, match="sync must be 'normal' or 'full', got 'sometimes'"):
        TraceStore(tmp_path / "t.sqlite", sync="sometimes")  # type: ignore[arg-type]


# -- concurrency ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sharing", ["one store", "a store per thread"])
def test_concurrent_episodes_from_eight_threads_all_land(store_location: str, sharing: str) -> None:
    path = store_location
    shared = open_store(path)
    start = threading.Barrier(8, timeout=10)  # all threads write at once
    errors: list[BaseException] = []

    def agent(worker: int) -> None:
        try:
            store = shared if sharing == "one store" else open_store(path)
            start.wait()
            _record(store, f"w{worker}", float(worker), steps=6, fail_at=worker % 3)
            if store is not shared:
                store.close()
        except BaseException as exc:  # handed to the main thread
            errors.append(exc)

    threads = [threading.Thread(target=agent, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with open_store(path) as reopened:
        assert len(reopened) == 8
        for worker, episode in enumerate(reopened.episodes()):
            assert episode.trace_id == f"w{worker}"
            assert episode.status == "answered"
            assert [s.index for s in episode.steps] == list(range(6))
            assert [s.failed for s in episode.steps] == [i == worker % 3 for i in range(6)]
            assert len(episode.messages) == 2 + 2 * 6
            assert isinstance(episode.steps[0].action, ToolCall)
        assert reopened.trace_ids(failures_only=True) == [f"w{w}" for w in range(8)]
    shared.close()


def test_an_answer_step_needs_no_observation(store: TraceStore) -> None:
    log = TraceLogger(store, Episode(trace_id="quick", task="q", started_at=1.0, model="m"))
    log.step(
        Step(index=0, prompt_messages=2, completion=Completion(text="<answer>3</answer>"), action=Answer("3"))
    )
    log.finish("answered", answer="3")
    step = store.get("quick").steps[0]
    assert step.action == Answer("3") and step.observation is None and not step.failed
    assert store.trace_ids(failures_only=True) == []


def test_export_to_an_unwritable_place_is_a_clear_error(tmp_path):
    from regrpo.errors import TraceStoreError

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with TraceStore(":memory:") as store, pytest.raises(TraceStoreError, match="cannot write the export"):
        store.export_jsonl(blocker / "out.jsonl")


def test_export_is_readable_by_others(tmp_path, store):
    store.export_jsonl(tmp_path / "out.jsonl")
    assert (tmp_path / "out.jsonl").stat().st_mode & 0o044  # not mkstemp's 0600
