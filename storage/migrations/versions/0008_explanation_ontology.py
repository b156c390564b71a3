"""Explanations record the ontology their class expressions refer to (name and content hash).

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("explanations") as batch:
        batch.add_column(sa.Column("ontology", sa.String(200), nullable=True))
        batch.add_column(sa.Column("ontology_hash", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("explanations") as batch:
        batch.drop_column("ontology_hash")
        batch.drop_column("ontology")
