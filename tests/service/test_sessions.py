"""The request session and the server's connection pool: a read session on PostgreSQL (autocommit)
is closed on the event loop, any other in a worker thread; every connection goes back to the pool,
after errors too."""

from __future__ import annotations

import asyncio
import pytest
from sqlalchemy import event

from neurolabel.service.app import create_app
from neurolabel.storage import db
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
