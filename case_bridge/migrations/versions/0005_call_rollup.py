"""call rollup (the dashboard's pre-aggregation) and its indexes

Revision ID: 0005
Revises: 0004

Additive: the `call_rollup` table, filled from the calls already recorded (case_bridge.rollup.backfill, in this
migration's transaction), a partial index of the open calls and the cross-channel indexes on interactions.
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from case_bridge.rollup import backfill

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('call_rollup',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('hour', sa.DateTime(timezone=True), nullable=False),
    sa.Column('node', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('key', sa.String(length=200), nullable=False),
    sa.Column('n', sa.Integer(), nullable=False),
    sa.Column('total', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('call_rollup', schema=None) as batch_op:
        batch_op.create_index('ux_call_rollup_hour_node_kind_key', ['hour', 'node', 'kind', 'key'], unique=True)
        batch_op.create_index('ix_call_rollup_kind_hour', ['kind', 'hour'], unique=False)
    op.create_index('ix_call_records_open_started_at', 'call_records', ['started_at'], unique=False,
                    sqlite_where=sa.text('ended_at IS NULL'), postgresql_where=sa.text('ended_at IS NULL'))
    op.create_index('ix_interactions_channel_case_started', 'interactions', ['channel', 'case_id', 'started_at'],
                    unique=False)
    op.create_index('ix_interactions_channel_started', 'interactions', ['channel', 'started_at'], unique=False)
    if not op.get_context().as_sql:     # offline SQL has no rows to count (run `veratur db` online to fill it)
        backfill(op.get_bind(), versions=False, directions=False)   # rollup_versions: 0007, direction: 0009


def downgrade() -> None:
    op.drop_index('ix_interactions_channel_started', table_name='interactions')
    op.drop_index('ix_interactions_channel_case_started', table_name='interactions')
    op.drop_index('ix_call_records_open_started_at', table_name='call_records')
    with op.batch_alter_table('call_rollup', schema=None) as batch_op:
        batch_op.drop_index('ix_call_rollup_kind_hour')
        batch_op.drop_index('ux_call_rollup_hour_node_kind_key')
    op.drop_table('call_rollup')
