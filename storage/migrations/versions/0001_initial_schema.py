"""Initial schema: models, neurons, examples, explanations, scores, jobs, API keys.

Revision ID: 0001
Revises: 
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('api_keys',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('key_hash', sa.String(length=128), nullable=False),
    sa.Column('prefix', sa.String(length=32), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_keys')),
    sa.UniqueConstraint('key_hash', name=op.f('uq_api_keys_key_hash'))
    )
    op.create_table('jobs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=50), nullable=False),
    sa.Column('spec', JSONType, nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('progress', sa.Float(), nullable=False),
    sa.Column('progress_detail', JSONType, nullable=False),
    sa.Column('result', JSONType, nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('worker', sa.Text(), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_jobs'))
    )
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.create_index('ix_jobs_status_created_at', ['status', 'created_at'], unique=False)

    op.create_table('models',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('architecture', sa.String(length=200), nullable=True),
    sa.Column('source', sa.Text(), nullable=True),
    sa.Column('unit_map', JSONType, nullable=False),
    sa.Column('n_layers', sa.Integer(), nullable=True),
    sa.Column('n_units', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_models')),
    sa.UniqueConstraint('name', name=op.f('uq_models_name'))
    )
    op.create_table('neurons',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('model_id', sa.Integer(), nullable=False),
    sa.Column('layer', sa.Integer(), nullable=False),
    sa.Column('index', sa.Integer(), nullable=False),
    sa.Column('stats', JSONType, nullable=True),
    sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['model_id'], ['models.id'], name=op.f('fk_neurons_model_id_models'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_neurons')),
    sa.UniqueConstraint('model_id', 'layer', 'index', name=op.f('uq_neurons_model_id_layer_index'))
    )
    op.create_table('examples',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('neuron_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('split', sa.String(length=16), nullable=False),
    sa.Column('window_id', sa.Integer(), nullable=False),
    sa.Column('quantile', sa.Integer(), nullable=True),
    sa.Column('tokens', sa.JSON(), nullable=False),
    sa.Column('activations', sa.JSON(), nullable=False),
    sa.Column('max_activation', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['neuron_id'], ['neurons.id'], name=op.f('fk_examples_neuron_id_neurons'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_examples')),
    sa.UniqueConstraint('neuron_id', 'kind', 'position', name=op.f('uq_examples_neuron_id_kind_position'))
    )
    op.create_table('explanations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('neuron_id', sa.Integer(), nullable=False),
    sa.Column('explainer', sa.String(length=100), nullable=False),
    sa.Column('explainer_version', sa.String(length=100), nullable=False),
    sa.Column('rank', sa.Integer(), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('structured', JSONType, nullable=False),
    sa.Column('params', JSONType, nullable=False),
    sa.Column('score', sa.Float(), nullable=True),
    sa.Column('accepted', sa.Boolean(), nullable=False),
    sa.Column('embedding', sa.LargeBinary(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['neuron_id'], ['neurons.id'], name=op.f('fk_explanations_neuron_id_neurons'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_explanations')),
    sa.UniqueConstraint('neuron_id', 'explainer', 'explainer_version', 'rank', name=op.f('uq_explanations_neuron_id_explainer_explainer_version_rank'))
    )
    with op.batch_alter_table('explanations', schema=None) as batch_op:
        batch_op.create_index('ix_explanations_score', ['score'], unique=False)
        batch_op.create_index('ix_explanations_updated_at', ['updated_at'], unique=False)

    op.create_table('scores',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('explanation_id', sa.Integer(), nullable=False),
    sa.Column('scorer', sa.String(length=100), nullable=False),
    sa.Column('simulator', sa.String(length=100), nullable=False),
    sa.Column('split', sa.String(length=16), nullable=False),
    sa.Column('score', sa.Float(), nullable=True),
    sa.Column('parts', JSONType, nullable=False),
    sa.Column('n_tokens', sa.Integer(), nullable=False),
    sa.Column('method', sa.String(length=100), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['explanation_id'], ['explanations.id'], name=op.f('fk_scores_explanation_id_explanations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_scores')),
    sa.UniqueConstraint('explanation_id', 'scorer', 'simulator', 'split', name=op.f('uq_scores_explanation_id_scorer_simulator_split'))
    )


def downgrade() -> None:
    op.drop_table('scores')
    with op.batch_alter_table('explanations', schema=None) as batch_op:
        batch_op.drop_index('ix_explanations_updated_at')
        batch_op.drop_index('ix_explanations_score')

    op.drop_table('explanations')
    op.drop_table('examples')
    op.drop_table('neurons')
    op.drop_table('models')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_jobs_status_created_at')

    op.drop_table('jobs')
    op.drop_table('api_keys')
