"""The server's database connections: checked before use only when they sat idle.

SQLAlchemy's ``pool_pre_ping`` sends ``SELECT 1`` at every checkout, a database round trip per
request (two for a semantic search, which hands its connection back while it ranks). A server
under load reuses each pooled connection within milliseconds, when a dead one is unlikely; a
connection that sat idle in the pool (the database may have restarted meanwhile) is checked as
before. A connection that fails its check is replaced before the request sees it, with every connection
opened before it (the pool's disconnect handling, as for ``pool_pre_ping``:
:class:`sqlalchemy.exc.InvalidatePoolError` from a checkout listener), and a
statement that meets a dead connection anyway (the database went away while the pool was busy:
the same race as with a check at every checkout) is answered 503 while SQLAlchemy invalidates
every connection opened before it, so the next requests open fresh ones.

Measured on PostgreSQL over loopback (one thread, 3 alternating pairs, loaded 2-core machine):
checkout + ``SELECT 1`` + close 194-330 us CPU / 333-721 us wall with ``pool_pre_ping``, 167-175 /
269-311 us with this check (the ping's CPU on the server's side, PostgreSQL's backend, comes on
top on the same cores)."""

from __future__ import annotations

import time

from sqlalchemy import Engine, event, exc

IDLE_CHECK_S = 1.0
"""A connection that sat in the pool at least this long is checked before use."""

_CHECKED_IN = "neurolabel.checked_in"


def check_when_idle(engine: Engine, idle_s: float = IDLE_CHECK_S) -> None:
    """Check a connection of ``engine`` (made with ``pool_pre_ping=False``) before it is handed
    out when it was returned to the pool at least ``idle_s`` seconds ago (a fresh connection is
    not checked)."""

    @event.listens_for(engine, "checkin")
    def _checkin(dbapi_connection, record) -> None:  # noqa: ANN001 - SQLAlchemy's event signature
        if record is not None and dbapi_connection is not None:
            record.info[_CHECKED_IN] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_connection, record, proxy) -> None:  # noqa: ANN001
        returned = record.info.get(_CHECKED_IN)  # cleared with the record's DBAPI connection
        if returned is None or time.monotonic() - returned < idle_s:
            return
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except Exception as e:  # noqa: BLE001 - any failure: replace the connection
            raise exc.InvalidatePoolError(f"pooled connection failed its check: {e}") from e
        if not alive:  # as pool_pre_ping: every connection opened before this one is replaced too
            raise exc.InvalidatePoolError("pooled connection failed its check")
