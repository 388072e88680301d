"""The trace-store tests run against both backends: a SQLite file and a real PostgreSQL database.

PostgreSQL needs a server: ``REGRPO_TEST_POSTGRES_URL`` names one, with a role allowed to create
databases (``.ci/run`` installs and starts Debian's PostgreSQL and sets it). Each test gets a fresh
database, dropped afterwards. Without the variable the PostgreSQL cases are skipped, saying why.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from regrpo.traces import TraceStore, open_store

POSTGRES_URL_VARIABLE = "REGRPO_TEST_POSTGRES_URL"


@pytest.fixture(scope="session")
def postgres_server() -> str:
    url = os.environ.get(POSTGRES_URL_VARIABLE)
    if not url:
        pytest.skip(
            f"no PostgreSQL server: set {POSTGRES_URL_VARIABLE}=postgresql://user:password@host/db "
            "(a role that may CREATE DATABASE); .ci/run starts one"
        )
    return url


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh, empty database on the test server, dropped after the test."""
    import psycopg

    name = f"regrpo_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield urlsplit(postgres_server)._replace(path=f"/{name}").geturl()
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def store_location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a store lives: a SQLite file path, or a PostgreSQL URL (what ``--store`` takes)."""
    if request.param == "sqlite":
        return str(tmp_path / "traces.sqlite")
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def store(store_location: str) -> Iterator[TraceStore]:
    with open_store(store_location) as trace_store:
        yield trace_store
