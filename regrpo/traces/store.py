"""``TraceStore``: episodes on disk in SQLite (WAL), written as they happen.

Layout: one row per episode header, one per message, one per step, one per feedback, each body a
msgpack-encoded Struct from :mod:`regrpo.traces.schema`, and one per distinct input image (PNG, by
the pixel hash the episodes record). Every write is its own committed
transaction, so what a running agent has done survives a crash of its process (``kill -9``): an
episode that died mid-run reads back with status ``running`` and every step it finished.

Durability: WAL with ``synchronous=NORMAL`` (the default) survives a process crash; pass
``sync="full"`` to also survive power loss, at the cost of an fsync per write.
Concurrency: one connection guarded by a lock; safe from many threads of one process. Several
processes may share the file (SQLite locking); for many machines, use the PostgreSQL store
(:class:`~regrpo.traces.postgres_store.PostgresTraceStore`, the same methods), chosen by
:func:`open_store` from a ``postgresql://`` URL.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import msgspec
import tenacity

from regrpo.errors import TraceNotFoundError, TraceStoreError
from regrpo.traces.schema import Episode, Feedback, Message, Step

__all__ = ["TraceStore", "open_store"]

SCHEMA_VERSION = 1
_BUSY_TIMEOUT_MS = 10_000
_OPEN_RETRY_S = 30.0


def _is_lock_contention(exc: BaseException) -> bool:
    """Whether ``exc`` is SQLite saying another connection holds the lock (worth a retry)."""
    text = str(exc).lower()
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS episodes (
    trace_id TEXT PRIMARY KEY,
    started_at REAL NOT NULL,
    status TEXT NOT NULL,
    has_failure INTEGER NOT NULL DEFAULT 0,
    header BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS episodes_started ON episodes (started_at);
CREATE TABLE IF NOT EXISTS messages (
    trace_id TEXT NOT NULL, idx INTEGER NOT NULL, body BLOB NOT NULL, PRIMARY KEY (trace_id, idx)
);
CREATE TABLE IF NOT EXISTS steps (
    trace_id TEXT NOT NULL, idx INTEGER NOT NULL, failed INTEGER NOT NULL, body BLOB NOT NULL,
    PRIMARY KEY (trace_id, idx)
);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT, trace_id TEXT NOT NULL, body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS feedback_trace ON feedback (trace_id);
CREATE TABLE IF NOT EXISTS images (sha256 TEXT PRIMARY KEY, png BLOB NOT NULL);
"""

_encoder = msgspec.msgpack.Encoder()
_episode_decoder = msgspec.msgpack.Decoder(Episode)
_step_decoder = msgspec.msgpack.Decoder(Step)
_message_decoder = msgspec.msgpack.Decoder(Message)
_feedback_decoder = msgspec.msgpack.Decoder(Feedback)


def _timestamp(value: float | dt.datetime) -> float:
    return value.timestamp() if isinstance(value, dt.datetime) else float(value)


def open_store(where: str | os.PathLike[str]) -> TraceStore:
    """The trace store at ``where``: a ``postgresql://`` (or ``postgres://``) URL, else a SQLite file path.

    What every command's ``--store`` goes through, so one flag picks either backend.
    """
    if isinstance(where, str) and where.startswith(("postgresql://", "postgres://")):
        from regrpo.traces.postgres_store import PostgresTraceStore

        return PostgresTraceStore(where)
    return TraceStore(where)


class TraceStore:
    """A durable store of episodes in one SQLite file.

    Args:
        path: The database file; its folder is created if missing. ``":memory:"`` keeps it in RAM.
        sync: ``"normal"`` survives process crashes; ``"full"`` survives power loss too.
    """

    # The writes whose syntax differs between SQL dialects (PostgresTraceStore has its own).
    _PUT_HEADER = (
        "INSERT OR REPLACE INTO episodes (trace_id, started_at, status, has_failure, header) "
        "VALUES (?, ?, ?, ?, ?)"
    )
    _PUT_MESSAGE = "INSERT OR REPLACE INTO messages (trace_id, idx, body) VALUES (?, ?, ?)"
    _PUT_STEP = "INSERT OR REPLACE INTO steps (trace_id, idx, failed, body) VALUES (?, ?, ?, ?)"
    _PUT_IMAGE = "INSERT OR IGNORE INTO images (sha256, png) VALUES (?, ?)"

    def __init__(self, path: str | os.PathLike[str], *, sync: Literal["normal", "full"] = "normal") -> None:
        if sync not in ("normal", "full"):
            raise TraceStoreError(f"sync must be 'normal' or 'full', got {sync!r}")
        self.path = str(path)
        self._lock = threading.Lock()
        in_memory = self.path == ":memory:"
        try:
            if not in_memory:
                Path(self.path).expanduser().parent.mkdir(parents=True, exist_ok=True)
            # autocommit: every write below is its own transaction, committed when execute returns
            self._db = sqlite3.connect(
                ":memory:" if in_memory else Path(self.path).expanduser(),
                check_same_thread=False,
                isolation_level=None,
            )
        except (OSError, sqlite3.Error) as exc:
            raise TraceStoreError(f"cannot open trace store {self.path!r}: {exc}") from exc
        try:
            # Processes opening one new file at once (ranks under torchrun) race on the switch to
            # WAL and the schema; SQLite answers some of those races "locked" at once, without
            # its busy handler, so the whole (idempotent) set-up is retried for a while.
            for attempt in tenacity.Retrying(
                retry=tenacity.retry_if_exception(_is_lock_contention),
                stop=tenacity.stop_after_delay(_OPEN_RETRY_S),
                wait=tenacity.wait_random_exponential(multiplier=0.01, max=0.5),
                reraise=True,
            ):
                with attempt:
                    self._set_up(sync)
        except (sqlite3.Error, TraceStoreError) as exc:
            self._db.close()
            if isinstance(exc, TraceStoreError):
                raise
            raise TraceStoreError(f"cannot open trace store {self.path!r}: {exc}") from exc

    def _set_up(self, sync: str) -> None:
        self._db.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA_VERSION):  # checked before anything is changed in the file
            raise TraceStoreError(
                f"{self.path} has trace schema version {version}; this regrpo reads version "
                f"{SCHEMA_VERSION}. Use a new file or the regrpo version that wrote it."
            )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={sync.upper()}")
        self._db.executescript(_SCHEMA)
        self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    # -- writing (used by TraceLogger) -------------------------------------------------------------

    def _write(self, sql: str, params: tuple[object, ...]) -> None:
        with self._lock:
            try:
                self._db.execute(sql, params)
            except sqlite3.Error as exc:
                raise TraceStoreError(f"cannot write to trace store {self.path!r}: {exc}") from exc

    def put_header(self, episode: Episode) -> None:
        """Insert or replace an episode's header (everything but messages, steps and feedback)."""
        header = msgspec.structs.replace(episode, messages=[], steps=[], feedback=[])
        self._write(
            self._PUT_HEADER,
            (
                episode.trace_id,
                episode.started_at,
                episode.status,
                int(episode.has_failure),
                _encoder.encode(header),
            ),
        )

    def append_message(self, trace_id: str, index: int, message: Message) -> None:
        self._write(self._PUT_MESSAGE, (trace_id, index, _encoder.encode(message)))

    def append_step(self, trace_id: str, step: Step) -> None:
        self._write(self._PUT_STEP, (trace_id, step.index, int(step.failed), _encoder.encode(step)))

    def add_feedback(self, trace_id: str, feedback: Feedback) -> None:
        """Record a reward and/or reference answer for an existing episode."""
        self.get_header(trace_id)  # raises TraceNotFoundError for an unknown id
        self._write(
            "INSERT INTO feedback (trace_id, body) VALUES (?, ?)", (trace_id, _encoder.encode(feedback))
        )

    def put_image(self, sha256: str, png: bytes) -> None:
        """Keep an input image's pixels once, by the hash its episodes record (``ImageRecord.sha256``).

        The learning loop replays failures of any episode from these (a user's images exist nowhere
        else); one copy serves every episode that showed the same pixels.
        """
        self._write(self._PUT_IMAGE, (sha256, png))

    def has_image(self, sha256: str) -> bool:
        """Whether the pixels of ``sha256`` are kept already (so a caller can skip encoding them)."""
        return bool(self._rows("SELECT 1 FROM images WHERE sha256 = ?", (sha256,)))

    def get_image(self, sha256: str) -> bytes:
        """The PNG bytes kept for ``sha256``; :class:`TraceStoreError` if this store has none."""
        rows = self._rows("SELECT png FROM images WHERE sha256 = ?", (sha256,))
        if not rows:
            raise TraceStoreError(
                f"{self.path} keeps no image with hash {sha256[:12]}…; it was recorded by an agent "
                "with keep_images=False, or by an older regrpo"
            )
        return bytes(rows[0][0])

    # -- reading -----------------------------------------------------------------------------------

    def _rows(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple]:
        with self._lock:
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise TraceStoreError(f"cannot read trace store {self.path!r}: {exc}") from exc

    def _decode(self, decoder: msgspec.msgpack.Decoder[Any], body: bytes, trace_id: str) -> Any:
        try:
            return decoder.decode(body)
        except msgspec.DecodeError as exc:  # a corrupt row, or one a different schema wrote
            raise TraceStoreError(f"cannot decode episode {trace_id!r} in {self.path}: {exc}") from exc

    def get_header(self, trace_id: str) -> Episode:
        rows = self._rows("SELECT header FROM episodes WHERE trace_id = ?", (trace_id,))
        if not rows:
            raise TraceNotFoundError(f"no episode with trace id {trace_id!r} in {self.path}")
        return self._decode(_episode_decoder, rows[0][0], trace_id)

    def get(self, trace_id: str) -> Episode:
        """The whole episode: header, messages, steps and feedback."""
        episode = self.get_header(trace_id)
        episode.messages = [
            self._decode(_message_decoder, b, trace_id)
            for (b,) in self._rows("SELECT body FROM messages WHERE trace_id = ? ORDER BY idx", (trace_id,))
        ]
        episode.steps = [
            self._decode(_step_decoder, b, trace_id)
            for (b,) in self._rows("SELECT body FROM steps WHERE trace_id = ? ORDER BY idx", (trace_id,))
        ]
        episode.feedback = self.feedback(trace_id)
        return episode

    def feedback(self, trace_id: str) -> list[Feedback]:
        """The episode's feedback, oldest first, without reading its messages or steps (``[]`` for none,
        or for an id the store does not hold: :meth:`get_header` tells those apart)."""
        return [
            self._decode(_feedback_decoder, b, trace_id)
            for (b,) in self._rows("SELECT body FROM feedback WHERE trace_id = ? ORDER BY id", (trace_id,))
        ]

    def trace_ids(
        self,
        *,
        since: float | dt.datetime | None = None,
        failures_only: bool = False,
        with_feedback: bool = False,
        limit: int | None = None,
    ) -> list[str]:
        """Trace ids in start order, optionally only those started at/after ``since``, with a failure,
        or with feedback recorded (filters combine: all must hold)."""
        where, params = [], []
        if since is not None:
            where.append("started_at >= ?")
            params.append(_timestamp(since))
        if failures_only:
            where.append("(has_failure = 1 OR trace_id IN (SELECT trace_id FROM steps WHERE failed = 1))")
        if with_feedback:
            where.append("trace_id IN (SELECT trace_id FROM feedback)")
        sql = "SELECT trace_id FROM episodes"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY started_at, trace_id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [trace_id for (trace_id,) in self._rows(sql, tuple(params))]

    def episodes(
        self,
        *,
        since: float | dt.datetime | None = None,
        failures_only: bool = False,
        limit: int | None = None,
    ) -> Iterator[Episode]:
        """Whole episodes in start order; see :meth:`trace_ids` for the filters."""
        for trace_id in self.trace_ids(since=since, failures_only=failures_only, limit=limit):
            yield self.get(trace_id)

    def __len__(self) -> int:
        return self._rows("SELECT COUNT(*) FROM episodes")[0][0]

    def __contains__(self, trace_id: object) -> bool:
        return bool(self._rows("SELECT 1 FROM episodes WHERE trace_id = ?", (str(trace_id),)))

    def export_jsonl(
        self,
        path: str | os.PathLike[str],
        *,
        since: float | dt.datetime | None = None,
        failures_only: bool = False,
    ) -> int:
        """Write matching episodes as JSON lines (written to a temp file, then renamed); returns the count."""
        target = Path(path).expanduser()
        count = 0
        # not mkstemp: its 0600 mode would stick to the export; "x" mode respects the umask
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "xb") as out:
                for episode in self.episodes(since=since, failures_only=failures_only):
                    out.write(msgspec.json.encode(episode) + b"\n")
                    count += 1
            os.replace(tmp, target)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise TraceStoreError(f"cannot write the export to {str(target)!r}: {exc}") from exc
            raise
        return count

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> TraceStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TraceStore({self.path!r})"
