"""Per-neuron token statistics of the explain split and the prefix tokens windows were recorded after.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("neurons") as batch:
        batch.add_column(sa.Column("token_stats", JSONType, nullable=True))
        batch.add_column(sa.Column("prefix", JSONType, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("neurons") as batch:
        batch.drop_column("prefix")
        batch.drop_column("token_stats")
