"""Failed explanation attempts: an explainer version that could not explain a neuron.

The labelling pipeline records them so that reruns and nightly jobs do not retry the same
neuron with the same explainer version every time (``--retry-failed`` does).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "explanation_failures",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("neuron_id", sa.Integer(), nullable=False),
        sa.Column("explainer", sa.String(length=100), nullable=False),
        sa.Column("explainer_version", sa.String(length=100), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("first_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["neuron_id"], ["neurons.id"],
                                name=op.f("fk_explanation_failures_neuron_id_neurons"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_explanation_failures")),
        sa.UniqueConstraint("neuron_id", "explainer", "explainer_version",
                            name=op.f("uq_explanation_failures_neuron_id_explainer_explainer_version")),
    )


def downgrade() -> None:
    op.drop_table("explanation_failures")
