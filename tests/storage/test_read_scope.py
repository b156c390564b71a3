"""Read-only sessions (``storage.db.read_scope``): on SQLite they begin deferred, a WAL snapshot, so
a reader neither waits for a write in progress nor makes it wait — a labelling run's workers load
records while the run writes labels. Both engines: reads see what was committed, and the scope
commits and rolls back as ``session_scope`` does."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from neurolabel.storage import db
from neurolabel.storage import queries as q
from neurolabel.storage.models import Neuron
from tests.storage.factories import record


def _count(session) -> int:
    return session.execute(select(func.count(Neuron.id))).scalar_one()


def test_a_reader_does_not_wait_for_a_write_in_progress(migrated_url: str) -> None:
    with db.session_scope(migrated_url) as s:
        q.save_neuron_records(session=s, records=[record(0, 0)])
    with db.session_scope(migrated_url) as writer:
        q.save_neuron_records(session=writer, records=[record(0, 1)], commit=False)
        writer.flush()  # the write transaction holds the lock (SQLite: BEGIN IMMEDIATE) and is not committed
        # in the same thread: a reader that waited for the lock would wait here until the busy timeout
        # (SQLITE_BUSY_TIMEOUT_MS) and fail as "database is locked"
        with db.read_scope(migrated_url) as reader:
            assert _count(reader) == 1  # the committed snapshot
            got = q.load_neuron_record(session=reader, model=record(0, 0).model, neuron=record(0, 0).neuron)
            assert got is not None and got.neuron == record(0, 0).neuron
    with db.read_scope(migrated_url) as reader:
        assert _count(reader) == 2


def test_the_read_only_option_is_the_readers_alone(sqlite_url: str) -> None:
    """Sessions of session_scope still begin IMMEDIATE: two writers queue up instead of failing."""
    db.upgrade(sqlite_url)
    began: list[str] = []
    from sqlalchemy import event

    engine = db.get_engine(sqlite_url)

    @event.listens_for(engine, "before_cursor_execute")
    def seen(conn, cursor, statement, *a):  # noqa: ANN001
        if statement.startswith("BEGIN"):
            began.append(statement)

    try:
        with db.session_scope(sqlite_url) as s:
            _count(s)
        with db.read_scope(sqlite_url) as s:
            _count(s)
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert began == ["BEGIN IMMEDIATE", "BEGIN"]


def test_a_failing_read_rolls_back_and_the_error_comes_through(migrated_url: str) -> None:
    with pytest.raises(ZeroDivisionError):
        with db.read_scope(migrated_url) as s:
            _count(s)
            1 / 0
    with db.read_scope(migrated_url) as s:
        assert _count(s) == 0
