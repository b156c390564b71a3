"""Contrast studies: studies, their two sets' fingerprints, per-neuron statistics.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "studies",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("model_id", sa.Integer(), sa.ForeignKey("models.id", ondelete="CASCADE",
                                                         name="fk_studies_model_id_models"), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("score", sa.String(16), nullable=False),
        sa.Column("test", sa.String(32), nullable=False),
        sa.Column("layers", JSONType, nullable=False),
        sa.Column("n_tested", sa.Integer(), nullable=False),
        sa.Column("params", JSONType, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_studies"),
    )
    op.create_index("ix_studies_model_id_created_at", "studies", ["model_id", "created_at"])
    op.create_table(
        "study_sets",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("study_id", sa.Integer(), sa.ForeignKey("studies.id", ondelete="CASCADE",
                                                         name="fk_study_sets_study_id_studies"), nullable=False),
        sa.Column("side", sa.String(1), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("n_examples", sa.Integer(), nullable=False),
        sa.Column("n_tokens", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_study_sets"),
        sa.UniqueConstraint("study_id", "side", name="uq_study_sets_study_id_side"),
    )
    op.create_table(
        "study_neurons",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("study_id", sa.Integer(), sa.ForeignKey("studies.id", ondelete="CASCADE",
                                                         name="fk_study_neurons_study_id_studies"), nullable=False),
        sa.Column("neuron_id", sa.Integer(), sa.ForeignKey("neurons.id", ondelete="CASCADE",
                                                          name="fk_study_neurons_neuron_id_neurons"), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("auroc", sa.Float(), nullable=False),
        sa.Column("p_value", sa.Float(), nullable=False),
        sa.Column("q_value", sa.Float(), nullable=False),
        sa.Column("smd", sa.Float(), nullable=True),
        sa.Column("smd_other", sa.Float(), nullable=True),
        sa.Column("mean_a", sa.Float(), nullable=False),
        sa.Column("mean_b", sa.Float(), nullable=False),
        sa.Column("std_a", sa.Float(), nullable=False),
        sa.Column("std_b", sa.Float(), nullable=False),
        sa.Column("sample_a", sa.JSON(), nullable=False),
        sa.Column("sample_b", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_study_neurons"),
        sa.UniqueConstraint("study_id", "neuron_id", name="uq_study_neurons_study_id_neuron_id"),
    )
    op.create_index("ix_study_neurons_study_id_rank", "study_neurons", ["study_id", "rank"])


def downgrade() -> None:
    op.drop_index("ix_study_neurons_study_id_rank", table_name="study_neurons")
    op.drop_table("study_neurons")
    op.drop_table("study_sets")
    op.drop_index("ix_studies_model_id_created_at", table_name="studies")
    op.drop_table("studies")
