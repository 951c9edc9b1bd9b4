"""callback jobs and opt-outs

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 01:35:00

Additive only: `callback_jobs` (durable outbound calls with a lease) and `callback_opt_outs`.
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('callback_jobs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('case_id', sa.Integer(), nullable=False),
    sa.Column('number', sa.String(length=32), nullable=False),
    sa.Column('reason', sa.String(length=64), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('lease_owner', sa.String(length=64), nullable=True),
    sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_outcome', sa.String(length=32), nullable=False),
    sa.Column('detail', sa.String(length=200), nullable=False),
    sa.Column('sip_call_id', sa.String(length=200), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['case_id'], ['cases.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('callback_jobs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_callback_jobs_case_id'), ['case_id'], unique=False)
        batch_op.create_index('ix_callback_jobs_state_next', ['state', 'next_attempt_at'], unique=False)
    op.create_table('callback_opt_outs',
    sa.Column('number', sa.String(length=32), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.PrimaryKeyConstraint('number')
    )


def downgrade() -> None:
    op.drop_table('callback_opt_outs')
    with op.batch_alter_table('callback_jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_callback_jobs_state_next')
        batch_op.drop_index(batch_op.f('ix_callback_jobs_case_id'))
    op.drop_table('callback_jobs')
