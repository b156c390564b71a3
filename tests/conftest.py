"""Shared fixtures: isolated cache/settings, SQLite and real PostgreSQL database URLs."""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# label vector indexes of the per-test PostgreSQL databases go to a temporary folder
os.environ.setdefault("NEUROLABEL_INDEX_DIR", tempfile.mkdtemp(prefix="neurolabel-index-"))

PG_ADMIN_URL = os.environ.get("NEUROLABEL_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
"""Server used for PostgreSQL tests: a fresh database is created on it per test session."""


@pytest.fixture(scope="session")
def pg_server_url() -> str:
    """A fresh, empty PostgreSQL database for this test session (dropped afterwards).

    Fails, never skips, when the server is unreachable: CI must not go green without it."""
    import psycopg

    name = f"nl_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL not reachable at {PG_ADMIN_URL}: {exc}. Start it with "
            "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`"
        )
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    yield f"{base.replace('postgresql://', 'postgresql+psycopg://', 1)}/{name}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


@pytest.fixture
def pg_url(pg_server_url: str) -> str:
    """A fresh PostgreSQL database per test (created on the same server)."""
    import psycopg

    name = f"nl_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = pg_server_url.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    from sqlalchemy.pool import NullPool  # noqa: F401 - engines are disposed by the tests

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite database file per test."""
    return f"sqlite:///{tmp_path / 'labels.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    """Each test using it runs on both engines."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("pg_url")
