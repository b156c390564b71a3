"""Job ownership, admin API keys and operator-registered data sources (corpora, models).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("owner_key_id", sa.Integer(), nullable=True))
        batch.create_index("ix_jobs_owner_key_id", ["owner_key_id"])
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("is_admin", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_table(
        "data_sources",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_data_sources"),
        sa.UniqueConstraint("kind", "name", name="uq_data_sources_kind_name"),
    )


def downgrade() -> None:
    op.drop_table("data_sources")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("is_admin")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_owner_key_id")
        batch.drop_column("owner_key_id")
