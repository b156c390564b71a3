"""Index for the neuron reads under load: a neuron's accepted explanations by score (its best
label, the ``labelled`` and ``min_score`` filters of neuron lists) read from one index range.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_explanations_neuron_id_accepted_score", "explanations", ["neuron_id", "accepted", "score"])


def downgrade() -> None:
    op.drop_index("ix_explanations_neuron_id_accepted_score", table_name="explanations")
