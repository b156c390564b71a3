"""Explanations keep their score's standard error, the explain-split tokens they were fitted on,
and which one is the neuron's label (``selected``).

Existing rows get no standard error or token count (not measured when they were stored), and the
label each neuron had: its highest-scoring accepted explanation (ties: lowest id). The next write
of a neuron's explanations chooses again with the stored figures.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # plain ADD COLUMNs (SQLite supports them): a batch operation would copy the table on SQLite and
    # lose the full-text triggers
    op.add_column("explanations", sa.Column("score_se", sa.Float(), nullable=True))
    op.add_column("explanations", sa.Column("fit_tokens", sa.Integer(), nullable=True))
    op.add_column("explanations", sa.Column("selected", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.execute(
        "UPDATE explanations SET selected = TRUE WHERE id IN ("
        " SELECT id FROM (SELECT id, ROW_NUMBER() OVER (PARTITION BY neuron_id ORDER BY score DESC, id) AS rn"
        " FROM explanations WHERE accepted AND score IS NOT NULL) AS ranked WHERE rn = 1)"
    )


def downgrade() -> None:
    for column in ("selected", "fit_tokens", "score_se"):  # SQLite >= 3.35 drops a column in place
        op.drop_column("explanations", column)
