"""escalation queue: transfer result, callback request, agent notes (issue 6)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 16:55:00

Additive only: new nullable/defaulted columns on `escalations` and a new `escalation_notes` table.
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('escalations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('mode', sa.String(length=16), server_default='refer', nullable=False))
        batch_op.add_column(sa.Column('sip_status', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('result_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('callback_requested', sa.Boolean(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('callback_phone', sa.String(length=20), nullable=True))
    op.create_table('escalation_notes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('escalation_id', sa.Integer(), nullable=False),
    sa.Column('staff_id', sa.Integer(), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['escalation_id'], ['escalations.id'], ),
    sa.ForeignKeyConstraint(['staff_id'], ['staff_users.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('escalation_notes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_escalation_notes_escalation_id'), ['escalation_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('escalation_notes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_escalation_notes_escalation_id'))
    op.drop_table('escalation_notes')
    with op.batch_alter_table('escalations', schema=None) as batch_op:
        batch_op.drop_column('callback_phone')
        batch_op.drop_column('callback_requested')
        batch_op.drop_column('result_at')
        batch_op.drop_column('sip_status')
        batch_op.drop_column('mode')
