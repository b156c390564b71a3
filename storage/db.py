"""Engines, sessions and schema migrations of the label database.

The database URL defaults to ``settings.database_url`` (``NEUROLABEL_DATABASE_URL``): a SQLite
file by default, PostgreSQL through psycopg 3 in production. Plain ``postgresql://`` URLs are
rewritten to ``postgresql+psycopg://``.

SQLite engines run in WAL mode with a busy timeout and open every transaction with
``BEGIN IMMEDIATE`` so that two writing processes queue up instead of failing; keep sessions
short (one :func:`session_scope` per unit of work). A unit of work that only reads takes
:func:`read_scope`: a plain (deferred) ``BEGIN``, a WAL snapshot that neither waits for a writer
nor holds one up.
"""

from __future__ import annotations

import logging
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from neurolabel.core.errors import StorageError
from neurolabel.core.settings import get_settings

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
"""Alembic script folder, shipped as package data."""

SQLITE_BUSY_TIMEOUT_MS = 30_000
"""How long a SQLite writer waits for another writer before giving up."""

_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def normalize_url(url: str | None = None) -> str:
    """The URL to use: ``url`` or the configured one, with the psycopg 3 driver for PostgreSQL."""
    url = url or get_settings().database_url
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    try:
        make_url(url)
    except ArgumentError as exc:
        raise StorageError(f"database URL {url!r} is not a valid SQLAlchemy URL: {exc}") from exc
    return url


def is_sqlite(url_or_engine: str | Engine) -> bool:
    """Whether the URL (or engine) points to SQLite."""
    if isinstance(url_or_engine, Engine):
        return url_or_engine.dialect.name == "sqlite"
    return make_url(normalize_url(url_or_engine)).get_backend_name() == "sqlite"


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:  # pragma: no cover - trivial
        dbapi_conn.isolation_level = None  # let SQLAlchemy's "begin" event emit BEGIN
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:  # pragma: no cover - trivial
        # a reader (read_scope) begins deferred: its snapshot waits for no writer; a writer takes the lock first
        conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(_READ_ONLY) else "BEGIN IMMEDIATE")


def make_engine(url: str | None = None, *, pool: bool = True, **engine_options: object) -> Engine:
    """A new engine for ``url`` (default: the configured database URL).

    SQLite: WAL, busy timeout, foreign keys, ``BEGIN IMMEDIATE``; the parent folder of the file
    is created. ``pool=False`` uses no connection pool (migrations, short-lived scripts)."""
    url = normalize_url(url)
    parsed = make_url(url)
    kwargs: dict = {"future": True}
    if parsed.get_backend_name() == "sqlite":
        db = parsed.database
        if db and db != ":memory:" and not db.startswith("file:"):
            Path(db).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
    else:
        kwargs["pool_pre_ping"] = True
    if not pool:
        kwargs["poolclass"] = NullPool
    kwargs.update(engine_options)  # e.g. pool_size / max_overflow of a server
    engine = create_engine(url, **kwargs)
    if parsed.get_backend_name() == "sqlite":
        _configure_sqlite(engine)
    return engine


def get_engine(url: str | None = None) -> Engine:
    """The process-wide shared engine for ``url`` (created on first use)."""
    url = normalize_url(url)
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = make_engine(url)
        return engine


def dispose_engines() -> None:
    """Close every shared engine (tests, before dropping a database)."""
    with _engines_lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
        _readers.clear()


def _forget_engines_in_child() -> None:
    """In a forked child: drop the parent's engines without closing their connections (they
    belong to the parent; SQLAlchemy's ``dispose(close=False)``), so the child opens its own."""
    global _engines_lock
    _engines_lock = threading.Lock()
    for engine in _engines.values():
        engine.dispose(close=False)
    _engines.clear()
    _readers.clear()


os.register_at_fork(after_in_child=_forget_engines_in_child)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """A ``sessionmaker`` bound to ``engine`` (objects stay readable after commit)."""
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """A session on the shared engine for ``url``: commits on success, rolls back on error."""
    with _unit_of_work(get_engine(url)) as session:
        yield session


_READ_ONLY = "neurolabel_read_only"
"""Execution option of :func:`read_scope`'s sessions (SQLite begins them deferred)."""
_readers: dict[int, tuple[Engine, Engine]] = {}


def reader(engine: Engine) -> Engine:
    """``engine`` for read-only units of work (same pool), made once per engine: on SQLite their
    transactions begin deferred (see :func:`read_scope`); elsewhere nothing changes."""
    got = _readers.get(id(engine))
    if got is None or got[0] is not engine:
        got = _readers[id(engine)] = (engine, engine.execution_options(**{_READ_ONLY: True}))
    return got[1]


@contextmanager
def read_scope(url: str | None = None) -> Iterator[Session]:
    """A session for a unit of work that only reads (commits on success, rolls back on error, as
    :func:`session_scope`). On SQLite it begins with a plain, deferred ``BEGIN`` instead of ``BEGIN
    IMMEDIATE``: in WAL mode it reads a snapshot without taking the write lock, so it neither waits
    for a write in progress nor makes one wait (a labelling run's worker processes load each
    neuron's record while the run writes batches of labels, whose transaction also waits for their
    label embeddings). PostgreSQL: the same as :func:`session_scope`. Do not write in it: on SQLite
    a write would then take the lock mid-transaction and may fail as busy."""
    with _unit_of_work(reader(get_engine(url))) as session:
        yield session


@contextmanager
def _unit_of_work(engine: Engine) -> Iterator[Session]:
    session = session_factory(engine)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def _alembic_config(url: str):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["url"] = normalize_url(url)
    return cfg


def upgrade(url: str | None = None, revision: str = "head") -> None:
    """Bring the database at ``url`` (empty or older) to ``revision`` (default: the newest)."""
    from alembic import command

    url = normalize_url(url)
    log.info("upgrading %s to %s", make_url(url).render_as_string(hide_password=True), revision)
    command.upgrade(_alembic_config(url), revision)


def downgrade(url: str | None = None, revision: str = "base") -> None:
    """Take the database at ``url`` back to ``revision`` (default: empty)."""
    from alembic import command

    url = normalize_url(url)
    command.downgrade(_alembic_config(url), revision)


def current_revision(url: str | None = None) -> str | None:
    """The schema revision the database at ``url`` is at (``None`` when not migrated)."""
    from alembic.runtime.migration import MigrationContext

    engine = make_engine(url, pool=False)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def head_revision() -> str:
    """The newest schema revision this version of neurolabel ships."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return head


def require_schema(url: str | None = None, *, migrate: bool = False) -> None:
    """Make sure the database at ``url`` has the newest schema.

    ``migrate=True`` upgrades an empty or older database; otherwise a database that is not at
    the head revision raises :class:`StorageError` telling how to fix it."""
    url = normalize_url(url)
    try:
        rev = current_revision(url)
    except Exception as exc:  # noqa: BLE001 - any driver error means "cannot use it"
        raise StorageError(
            f"database {make_url(url).render_as_string(hide_password=True)} cannot be opened: {exc}"
        ) from exc
    head = head_revision()
    if rev == head:
        return
    if migrate:
        upgrade(url)
        return
    shown = make_url(url).render_as_string(hide_password=True)
    raise StorageError(
        f"database {shown} is at schema revision {rev or 'none (empty)'}, this neurolabel needs {head}: "
        f"run `neurolabel db upgrade --db {shown}`"
    )
