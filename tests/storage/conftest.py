"""Fixtures of the storage tests: migrated databases on both engines, record/explanation builders."""

from __future__ import annotations

import pytest

from neurolabel.storage import db


@pytest.fixture(autouse=True)
def _dispose_engines():
    """Close pooled connections after each test so that its database can be dropped."""
    yield
    db.dispose_engines()


@pytest.fixture
def migrated_url(db_url: str) -> str:
    """A fresh database (SQLite and PostgreSQL) at the head schema revision."""
    db.upgrade(db_url)
    return db.normalize_url(db_url)


@pytest.fixture
def sqlite_migrated(sqlite_url: str) -> str:
    """A fresh SQLite database at head (for tests that need only one engine)."""
    db.upgrade(sqlite_url)
    return sqlite_url
