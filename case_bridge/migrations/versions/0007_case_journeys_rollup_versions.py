"""case journeys (cross-channel pre-aggregate), rollup versions (dashboard cache), covering rollup index

Revision ID: 0007
Revises: 0006

Additive: `case_journeys` (per case its first phone contact and the first later contact per other channel, filled
from the existing interactions and status changes by case_bridge.journeys.backfill in this migration's
transaction), `rollup_versions` (per UTC hour a counter raised by every write to that hour's figures), and the
rollup's (kind, hour) index replaced by one that also carries key, n and total so dashboard reads never visit
the table.
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from case_bridge.journeys import backfill

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('rollup_versions',
    sa.Column('hour', sa.DateTime(timezone=True), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('hour')
    )
    op.create_table('case_journeys',
    sa.Column('case_id', sa.Integer(), nullable=False),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('first_phone_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('gap_s', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['case_id'], ['cases.id'], ),
    sa.PrimaryKeyConstraint('case_id', 'channel')
    )
    op.create_index('ix_case_journeys_channel_first_phone', 'case_journeys', ['channel', 'first_phone_at', 'gap_s'],
                    unique=False)
    with op.batch_alter_table('call_rollup', schema=None) as batch_op:
        batch_op.drop_index('ix_call_rollup_kind_hour')
        batch_op.create_index('ix_call_rollup_kind_hour_cover', ['kind', 'hour', 'key', 'n', 'total'], unique=False)
    if not op.get_context().as_sql:     # offline SQL has no rows to read (run `veratur db` online to fill it)
        backfill(op.get_bind(), directions=False)   # call_records.direction comes with 0009


def downgrade() -> None:
    with op.batch_alter_table('call_rollup', schema=None) as batch_op:
        batch_op.drop_index('ix_call_rollup_kind_hour_cover')
        batch_op.create_index('ix_call_rollup_kind_hour', ['kind', 'hour'], unique=False)
    op.drop_index('ix_case_journeys_channel_first_phone', table_name='case_journeys')
    op.drop_table('case_journeys')
    op.drop_table('rollup_versions')
