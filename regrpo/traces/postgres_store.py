"""``PostgresTraceStore``: the trace store on a PostgreSQL server, for several machines writing at once.

The same methods, rows and msgpack bodies as the SQLite :class:`~regrpo.traces.store.TraceStore`
(it is a subclass: only connecting, the dialect's upserts and error types differ), so the agent, the
servers and the trainer take either; :func:`~regrpo.traces.store.open_store` picks it for a
``postgresql://`` URL, and so does every command's ``--store``.

- Connections come from a ``psycopg_pool.ConnectionPool`` (psycopg 3), in autocommit mode: every
  write is its own committed transaction, acknowledged only once PostgreSQL has made it durable
  (``synchronous_commit`` on, the server's default), so a writer killed with ``kill -9`` loses no
  write that returned, as with SQLite's WAL. Threads of one process share the pool; any number of
  processes and machines may write and read at once (row-level upserts, no file lock).
- The schema is created on first use under a transaction-scoped advisory lock, so processes starting
  together do not race on ``CREATE TABLE``; its version lives in ``regrpo_schema``, and a database
  written by another schema version is refused before anything is changed, as for SQLite.
- The URL's password never appears in errors or ``repr``.

Needs the ``postgres`` extra (``pip install 'regrpo[postgres]'``).
"""

from __future__ import annotations

import re
from typing import Any

from regrpo.errors import TraceStoreError
from regrpo.traces.store import SCHEMA_VERSION, TraceStore

__all__ = ["PostgresTraceStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS regrpo_schema (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS episodes (
    trace_id TEXT PRIMARY KEY,
    started_at DOUBLE PRECISION NOT NULL,
    status TEXT NOT NULL,
    has_failure INTEGER NOT NULL DEFAULT 0,
    header BYTEA NOT NULL
);
CREATE INDEX IF NOT EXISTS episodes_started ON episodes (started_at);
CREATE TABLE IF NOT EXISTS messages (
    trace_id TEXT NOT NULL, idx INTEGER NOT NULL, body BYTEA NOT NULL, PRIMARY KEY (trace_id, idx)
);
CREATE TABLE IF NOT EXISTS steps (
    trace_id TEXT NOT NULL, idx INTEGER NOT NULL, failed INTEGER NOT NULL, body BYTEA NOT NULL,
    PRIMARY KEY (trace_id, idx)
);
CREATE INDEX IF NOT EXISTS steps_failed ON steps (trace_id) WHERE failed = 1;
CREATE TABLE IF NOT EXISTS feedback (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, trace_id TEXT NOT NULL, body BYTEA NOT NULL
);
CREATE INDEX IF NOT EXISTS feedback_trace ON feedback (trace_id);
CREATE TABLE IF NOT EXISTS images (sha256 TEXT PRIMARY KEY, png BYTEA NOT NULL);
"""
_SCHEMA_LOCK = 0x72656772706F  # the pg_advisory_xact_lock key: "regrpo" in ASCII
_PASSWORD = re.compile(r"(://[^:/@]*:)[^@]*@")


def _redacted(url: str) -> str:
    return _PASSWORD.sub(r"\1***@", url)


class PostgresTraceStore(TraceStore):
    """A durable store of episodes in a PostgreSQL database.

    Args:
        url: A libpq connection URL, ``postgresql://user:password@host:5432/dbname``.
        pool_size: Most connections this process holds (threads beyond it wait for one).
        timeout_s: How long connecting, or waiting for a free connection, may take.
    """

    _PUT_HEADER = (
        "INSERT INTO episodes (trace_id, started_at, status, has_failure, header) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (trace_id) DO UPDATE SET started_at = EXCLUDED.started_at, status = EXCLUDED.status, "
        "has_failure = EXCLUDED.has_failure, header = EXCLUDED.header"
    )
    _PUT_MESSAGE = (
        "INSERT INTO messages (trace_id, idx, body) VALUES (?, ?, ?) "
        "ON CONFLICT (trace_id, idx) DO UPDATE SET body = EXCLUDED.body"
    )
    _PUT_STEP = (
        "INSERT INTO steps (trace_id, idx, failed, body) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (trace_id, idx) DO UPDATE SET failed = EXCLUDED.failed, body = EXCLUDED.body"
    )
    _PUT_IMAGE = "INSERT INTO images (sha256, png) VALUES (?, ?) ON CONFLICT (sha256) DO NOTHING"

    def __init__(self, url: str, *, pool_size: int = 4, timeout_s: float = 10.0) -> None:
        try:
            import psycopg
            from psycopg_pool import ConnectionPool, PoolTimeout
        except ImportError as exc:
            raise TraceStoreError(
                "a postgresql:// trace store needs psycopg 3 and psycopg-pool: pip install 'regrpo[postgres]'"
            ) from exc
        if pool_size < 1 or timeout_s <= 0:
            raise TraceStoreError(f"need pool_size >= 1 and timeout_s > 0; got {pool_size}, {timeout_s}")
        self.path = _redacted(url)
        self._errors: tuple[type[Exception], ...] = (psycopg.Error, PoolTimeout)
        connect_timeout = max(1, round(timeout_s))
        try:  # one direct attempt first: a wrong password or host fails at once, with libpq's reason
            psycopg.connect(url, connect_timeout=connect_timeout).close()
        except psycopg.Error as exc:
            raise TraceStoreError(f"cannot open trace store {self.path!r}: {_first_line(exc)}") from exc
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            timeout=timeout_s,
            kwargs={"autocommit": True, "connect_timeout": connect_timeout},
            open=False,
        )
        try:
            self._pool.open(wait=True, timeout=timeout_s)
            self._create_schema()
        except (*self._errors, TraceStoreError) as exc:
            self._pool.close()
            if isinstance(exc, TraceStoreError):
                raise
            raise TraceStoreError(f"cannot open trace store {self.path!r}: {_first_line(exc)}") from exc

    def _create_schema(self) -> None:
        with self._pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            exists = conn.execute("SELECT to_regclass('regrpo_schema') IS NOT NULL").fetchone()
            if exists and exists[0]:
                row = conn.execute("SELECT max(version) FROM regrpo_schema").fetchone()
                version = row[0] if row else None
                if version is not None and version != SCHEMA_VERSION:
                    raise TraceStoreError(
                        f"{self.path} has trace schema version {version}; this regrpo reads version "
                        f"{SCHEMA_VERSION}. Use a new database or the regrpo version that wrote it."
                    )
            for statement in filter(str.strip, _SCHEMA.split(";")):
                conn.execute(statement)
            if conn.execute("SELECT count(*) FROM regrpo_schema").fetchone() == (0,):
                conn.execute("INSERT INTO regrpo_schema (version) VALUES (%s)", (SCHEMA_VERSION,))

    # -- the two primitives every method goes through --------------------------------------------

    def _write(self, sql: str, params: tuple[object, ...]) -> None:
        try:
            with self._pool.connection() as conn:
                conn.execute(sql.replace("?", "%s"), params)
        except self._errors as exc:
            raise TraceStoreError(f"cannot write to trace store {self.path!r}: {_first_line(exc)}") from exc

    def _rows(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            with self._pool.connection() as conn:
                return conn.execute(sql.replace("?", "%s"), params).fetchall()
        except self._errors as exc:
            raise TraceStoreError(f"cannot read trace store {self.path!r}: {_first_line(exc)}") from exc

    def close(self) -> None:
        self._pool.close()

    def __repr__(self) -> str:
        return f"PostgresTraceStore({self.path!r})"


def _first_line(exc: BaseException) -> str:
    """psycopg's messages carry libpq's multi-line detail; the first line says what failed."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
