"""Jobs keep the delivery state of their callback: its id (the ``X-Neurolabel-Delivery`` header,
the same on every retry), state (``pending``, ``delivered``, ``failed``), attempts, last error,
when the next attempt is due and which process holds it (claim and claim time). The worker kept
it in memory only: a worker killed between a job's end and the callback's delivery lost it.

Existing jobs get no state (``NULL``: their callbacks, if any, were sent or lost before).

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

COLUMNS = ("callback_id", "callback_state", "callback_attempts", "callback_error", "callback_due_at",
           "callback_claimed_by", "callback_claimed_at")
PENDING = sa.text("callback_state = 'pending'")


def upgrade() -> None:
    # plain ADD COLUMNs, as 0009 (a batch operation would copy the table on SQLite)
    op.add_column("jobs", sa.Column("callback_id", sa.String(32), nullable=True))
    op.add_column("jobs", sa.Column("callback_state", sa.String(16), nullable=True))
    op.add_column("jobs", sa.Column("callback_attempts", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("jobs", sa.Column("callback_error", sa.Text(), nullable=True))
    op.add_column("jobs", sa.Column("callback_due_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("jobs", sa.Column("callback_claimed_by", sa.Text(), nullable=True))
    op.add_column("jobs", sa.Column("callback_claimed_at", sa.DateTime(timezone=True), nullable=True))
    # the deliveries still to make, by when they are due: what every worker's poll reads
    op.create_index("ix_jobs_callback_pending", "jobs", ["callback_due_at"], postgresql_where=PENDING,
                    sqlite_where=PENDING)


def downgrade() -> None:
    op.drop_index("ix_jobs_callback_pending", table_name="jobs")  # SQLite drops no indexed column
    for column in reversed(COLUMNS):  # SQLite >= 3.35 drops a column in place
        op.drop_column("jobs", column)
