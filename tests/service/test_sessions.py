"""The request session and the server's connection pool: a read session on PostgreSQL (autocommit)
is closed on the event loop, any other in a worker thread; every connection goes back to the pool,
after errors too; a pooled connection is checked before use only when it sat idle."""

from __future__ import annotations

import asyncio
import time

import psycopg
import pytest
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError

from neurolabel.service.app import create_app
from neurolabel.service.pool import check_when_idle
from neurolabel.storage import db
from tests.conftest import PG_ADMIN_URL
from tests.service.live import client, live_server, seed, small_ontology


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def test_sessions_end_where_they_should_and_give_back_their_connections(db_url: str) -> None:
    url = db.normalize_url(db_url)
    db.upgrade(url)
    seed(url)
    app = create_app(url, ontology=small_ontology)
    pool = app.state.engine.pool
    checkins: list[bool] = []
    event.listen(pool, "checkin", lambda dbapi_connection, record: checkins.append(_on_event_loop()))
    try:
        with live_server(app) as base, client(base) as http:
            assert http.get("/v1/models/tiny/neurons/0/1").status_code == 200
            assert http.get("/v1/models/tiny/neurons/0/1/label").status_code == 200
            assert http.get("/v1/models/tiny/neurons?layer=0").status_code == 200
            assert http.get("/v1/search", params={"q": "dogs"}).status_code == 200
            assert http.get("/v1/models/tiny/neurons/9/9").status_code == 404  # the handler raised
            assert http.get("/v1/jobs/12345").status_code == 404
            reads = list(checkins)
            checkins.clear()
            # a write request: its session (and the key check's statement) in worker threads
            r = http.post("/v1/jobs", json={"layers": [0], "units": [0], "explainers": ["pmi"]},
                          headers={"Authorization": "Bearer nl_not_a_key"})
            assert r.status_code == 401
            writes = list(checkins)
        assert pool.checkedout() == 0
        assert len(reads) >= 6 and writes
        if app.state.engine.dialect.name == "postgresql":
            assert app.state.reads_autocommit
            assert all(reads), reads  # nothing to roll back: closed on the event loop
        else:  # SQLite reads run in a transaction: rolled back in a worker thread
            assert not app.state.reads_autocommit
            assert not any(reads), reads
        assert not any(writes), writes
    finally:
        app.state.engine.dispose()


def _terminate(pid: int) -> None:
    """End the backend ``pid`` and wait until it is gone."""
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        deadline = time.monotonic() + 30
        while admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone():
            assert time.monotonic() < deadline, f"backend {pid} still alive"
            time.sleep(0.05)


def _backend(engine) -> int:
    with engine.connect() as conn:
        return conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()


@pytest.mark.postgres
def test_an_idle_connection_is_checked_and_replaced_before_use(pg_url: str) -> None:
    engine = db.make_engine(pg_url, pool_size=1, max_overflow=0, pool_pre_ping=False)
    check_when_idle(engine, idle_s=0.0)  # every reuse counts as idle
    try:
        first = _backend(engine)
        _terminate(first)  # the database dropped the pooled connection meanwhile
        assert _backend(engine) != first  # replaced before the statement ran: no error
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_a_recently_used_connection_is_not_checked(pg_url: str) -> None:
    """The trade: a connection back in the pool for less than ``idle_s`` is handed out unchecked,
    so a statement on one the database dropped meanwhile fails, once (503 in the server); the
    pool then replaces every connection opened before it."""
    engine = db.make_engine(pg_url, pool_size=1, max_overflow=0, pool_pre_ping=False)
    check_when_idle(engine, idle_s=3600.0)
    try:
        first = _backend(engine)
        _terminate(first)
        with pytest.raises(DBAPIError) as failed:
            _backend(engine)
        assert failed.value.connection_invalidated
        assert _backend(engine) != first
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_the_server_pool_keeps_the_connections_it_opened(pg_url: str) -> None:
    """16 clients at once: the pool opens a connection per concurrent request and keeps it (before,
    10 were kept and the others closed on return, to be opened again by the next burst)."""
    import threading

    url = db.normalize_url(pg_url)
    db.upgrade(url)
    seed(url)
    app = create_app(url, ontology=small_ontology)
    opened: list[int] = []
    event.listen(app.state.engine.pool, "connect", lambda dbapi_connection, record: opened.append(1))
    failures: list[str] = []

    def one_client(http) -> None:
        for _ in range(25):
            r = http.get("/v1/models/tiny/neurons/0/1")
            if r.status_code != 200:
                failures.append(r.text)

    try:
        with live_server(app) as base:
            clients = [client(base) for _ in range(16)]
            threads = [threading.Thread(target=one_client, args=(c,)) for c in clients]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            for c in clients:
                c.close()
        assert not failures
        assert 1 <= len(opened) <= 16
        assert app.state.engine.pool.checkedin() == len(opened)  # every one kept, none closed
    finally:
        app.state.engine.dispose()


def test_sqlite_reads_are_answered_while_a_write_holds_the_lock(sqlite_url: str) -> None:
    """On SQLite the server's read sessions begin deferred (a WAL snapshot): a GET is answered while
    another connection's write transaction holds the database's write lock (with BEGIN IMMEDIATE the
    request waited for the lock: the busy timeout, 30 s, then an error)."""
    from sqlalchemy import text

    url = db.normalize_url(sqlite_url)
    db.upgrade(url)
    seed(url)
    app = create_app(url, ontology=small_ontology)
    writer = db.make_engine(url, pool=False)
    try:
        with writer.connect() as conn:
            conn.execute(text("UPDATE neurons SET stats = stats"))  # inside BEGIN IMMEDIATE: the lock is held
            with live_server(app) as base, client(base) as http:
                got = http.get("/v1/models/tiny/neurons/0/1")
                assert got.status_code == 200 and got.json()["index"] == 1
            conn.rollback()
    finally:
        writer.dispose()
        app.state.engine.dispose()
