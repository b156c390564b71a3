"""Alembic migrations: empty -> head -> base on both engines, an older database to head, the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from neurolabel.storage import db

DATA_TABLES = {"models", "neurons", "examples", "explanations", "scores", "jobs", "api_keys"}


def _tables(url: str) -> set[str]:
    engine = db.make_engine(url, pool=False)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_upgrade_from_empty_and_downgrade_to_base(db_url: str) -> None:
    assert db.current_revision(db_url) is None
    db.upgrade(db_url)
    assert db.current_revision(db_url) == db.head_revision()
    tables = _tables(db_url)
    assert DATA_TABLES <= tables
    if db.is_sqlite(db_url):
        assert "explanations_fts" in tables
    else:
        cols = {c["name"] for c in inspect(db.make_engine(db_url, pool=False)).get_columns("explanations")}
        assert "text_tsv" in cols
    db.upgrade(db_url)  # idempotent
    db.downgrade(db_url, "base")
    assert db.current_revision(db_url) is None
    assert _tables(db_url) == set()


def test_older_database_is_brought_to_head_and_indexed(db_url: str) -> None:
    """A database at revision 0001 holding labels gains the full-text index over them."""
    db.upgrade(db_url, "0001")
    engine = db.make_engine(db_url, pool=False)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO models (name, unit_map, created_at) VALUES ('old', '{}', CURRENT_TIMESTAMP)"))
        conn.execute(text('INSERT INTO neurons (model_id, layer, "index") VALUES (1, 0, 7)'))
        conn.execute(text(
            "INSERT INTO explanations (neuron_id, explainer, explainer_version, rank, text, structured, params, "
            "accepted, created_at, updated_at) VALUES (1, 'pmi', '1', 0, 'golden retrievers', '{}', '{}', "
            "false, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
        ))
    engine.dispose()
    db.upgrade(db_url)
    from neurolabel.storage.queries import search_labels

    with db.session_scope(db_url) as s:
        hits = search_labels(session=s, query="retriever")
    assert [(h["model"], h["layer"], h["index"]) for h in hits] == [("old", 0, 7)]


def test_require_schema(sqlite_url: str) -> None:
    from neurolabel.core.errors import StorageError

    with pytest.raises(StorageError, match="neurolabel db upgrade"):
        db.require_schema(sqlite_url)
    db.require_schema(sqlite_url, migrate=True)
    assert db.current_revision(sqlite_url) == db.head_revision()


@pytest.mark.slow
def test_cli_upgrade_from_another_directory(tmp_path: Path, pg_url: str) -> None:
    """`neurolabel db upgrade` finds its migrations from any working directory, both engines."""
    exe = Path(sys.executable).with_name("neurolabel")
    env = {**os.environ, "NEUROLABEL_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}"}
    for args in (["db", "upgrade"], ["db", "upgrade", "--db", pg_url], ["db", "current", "--db", pg_url]):
        out = subprocess.run([str(exe), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
    assert "up to date" in out.stdout
    assert db.current_revision(f"sqlite:///{tmp_path / 'cli.db'}") == db.head_revision()
    assert db.current_revision(pg_url) == db.head_revision()
    out = subprocess.run([str(exe), "db", "downgrade", "base", "--db", pg_url], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert db.current_revision(pg_url) is None


CALLBACK_COLUMNS = {"callback_id", "callback_state", "callback_attempts", "callback_error", "callback_due_at",
                    "callback_claimed_by", "callback_claimed_at"}


def test_job_callback_delivery_columns_up_and_down(db_url: str) -> None:
    """0010 gives jobs their callback's delivery state (none for a job finished before: its
    callback was sent or lost in memory) and the index of pending deliveries; down to 0009 drops
    both and keeps the jobs; up again records a delivery."""
    from neurolabel.service import jobs

    db.upgrade(db_url, "0009")
    engine = db.make_engine(db_url, pool=False)
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO jobs (kind, spec, status, progress, progress_detail, created_at, attempts) VALUES "
            "('label', '{\"callback_url\": \"http://127.0.0.1:9/x\"}', 'done', 1.0, '{}', CURRENT_TIMESTAMP, 1)"))

    def shape() -> tuple[set[str], set[str]]:
        found = inspect(engine)
        return {c["name"] for c in found.get_columns("jobs")}, {i["name"] for i in found.get_indexes("jobs")}

    for _ in range(2):
        db.upgrade(db_url)
        columns, indexes = shape()
        assert CALLBACK_COLUMNS <= columns and "ix_jobs_callback_pending" in indexes
        with db.session_scope(db_url) as s:
            job = jobs.get_job(session=s, job_id=1)
            assert job["status"] == "done" and job["callback"] is None
            assert jobs.claim_callback(session=s, notifier="n", stale_after_s=60) is None  # nothing made up
            jobs.enqueue(session=s, spec={"layers": [0], "callback_url": "http://127.0.0.1:9/x"})
            s.commit()
            new = jobs.cancel(session=s, job_id=2)["callback"]
            assert new["state"] == "pending"
            assert jobs.claim_callback(session=s, notifier="n", stale_after_s=60)["callback"]["attempts"] == 1
        db.dispose_engines()
        db.downgrade(db_url, "0009")
        columns, indexes = shape()
        assert not CALLBACK_COLUMNS & columns and "ix_jobs_callback_pending" not in indexes
        with engine.begin() as conn:
            kept = conn.execute(text("SELECT id, status FROM jobs ORDER BY id")).all()
            assert [tuple(r) for r in kept] == [(1, "done"), (2, "cancelled")]
            conn.execute(text("DELETE FROM jobs WHERE id = 2"))
        if not db.is_sqlite(db_url):  # PostgreSQL's sequence went on: the next job is 3
            with engine.begin() as conn:
                conn.execute(text("SELECT setval('jobs_id_seq', 1)"))
    engine.dispose()
