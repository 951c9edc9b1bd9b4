"""call detail records and tallies

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 21:49:52.671600

Additive only: the call-detail figures on `call_records` (defaults for the calls recorded before), the
`call_tallies` table, and the indexes the dashboard's range queries use.
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('call_tallies',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('call_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('key', sa.String(length=200), nullable=False),
    sa.Column('n', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['call_id'], ['call_records.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('call_tallies', schema=None) as batch_op:
        batch_op.create_index('ix_call_tallies_call_id_kind', ['call_id', 'kind'], unique=False)
        batch_op.create_index('ix_call_tallies_kind_key', ['kind', 'key'], unique=False)

    with op.batch_alter_table('call_records', schema=None) as batch_op:
        batch_op.add_column(sa.Column('worker', sa.String(length=64), server_default='', nullable=False))
        batch_op.add_column(sa.Column('duration_s', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('turns_count', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('speech_turns', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('dtmf_turns', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('no_match_count', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('no_input_count', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('barge_ins', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('latency_p50_ms', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('latency_max_ms', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('transfer_reason', sa.String(length=64), nullable=True))
        batch_op.create_index('ix_call_records_disposition_started_at', ['disposition', 'started_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_call_records_started_at'), ['started_at'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('call_records', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_call_records_started_at'))
        batch_op.drop_index('ix_call_records_disposition_started_at')
        batch_op.drop_column('transfer_reason')
        batch_op.drop_column('latency_max_ms')
        batch_op.drop_column('latency_p50_ms')
        batch_op.drop_column('barge_ins')
        batch_op.drop_column('no_input_count')
        batch_op.drop_column('no_match_count')
        batch_op.drop_column('dtmf_turns')
        batch_op.drop_column('speech_turns')
        batch_op.drop_column('turns_count')
        batch_op.drop_column('duration_s')
        batch_op.drop_column('worker')

    with op.batch_alter_table('call_tallies', schema=None) as batch_op:
        batch_op.drop_index('ix_call_tallies_kind_key')
        batch_op.drop_index('ix_call_tallies_call_id_kind')

    op.drop_table('call_tallies')
