"""Full-text index of explanation labels.

SQLite: an external-content FTS5 table ``explanations_fts`` kept in sync by triggers.
PostgreSQL: a generated ``tsvector`` column ``text_tsv`` with a GIN index.
Existing labels are indexed during the upgrade.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_SQLITE_UP = [
    "CREATE VIRTUAL TABLE explanations_fts USING fts5("
    "text, content='explanations', content_rowid='id', tokenize='porter unicode61')",
    "CREATE TRIGGER explanations_fts_ai AFTER INSERT ON explanations BEGIN "
    "INSERT INTO explanations_fts(rowid, text) VALUES (new.id, new.text); END",
    "CREATE TRIGGER explanations_fts_ad AFTER DELETE ON explanations BEGIN "
    "INSERT INTO explanations_fts(explanations_fts, rowid, text) VALUES ('delete', old.id, old.text); END",
    "CREATE TRIGGER explanations_fts_au AFTER UPDATE OF text ON explanations BEGIN "
    "INSERT INTO explanations_fts(explanations_fts, rowid, text) VALUES ('delete', old.id, old.text); "
    "INSERT INTO explanations_fts(rowid, text) VALUES (new.id, new.text); END",
    "INSERT INTO explanations_fts(explanations_fts) VALUES ('rebuild')",
]
_SQLITE_DOWN = [
    "DROP TRIGGER IF EXISTS explanations_fts_au",
    "DROP TRIGGER IF EXISTS explanations_fts_ad",
    "DROP TRIGGER IF EXISTS explanations_fts_ai",
    "DROP TABLE IF EXISTS explanations_fts",
]
_PG_UP = [
    "ALTER TABLE explanations ADD COLUMN text_tsv tsvector "
    "GENERATED ALWAYS AS (to_tsvector('english'::regconfig, coalesce(text, ''))) STORED",
    "CREATE INDEX ix_explanations_text_tsv ON explanations USING gin (text_tsv)",
]
_PG_DOWN = [
    "DROP INDEX IF EXISTS ix_explanations_text_tsv",
    "ALTER TABLE explanations DROP COLUMN IF EXISTS text_tsv",
]


def _run(statements: list[str]) -> None:
    for sql in statements:
        op.execute(sql)


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        _run(_SQLITE_UP)
    elif dialect == "postgresql":
        _run(_PG_UP)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        _run(_SQLITE_DOWN)
    elif dialect == "postgresql":
        _run(_PG_DOWN)
