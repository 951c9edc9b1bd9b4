"""callback windows

Revision ID: 0008
Revises: 0007

Additive: a callback a clerk or an agent schedules has a window end (`not_after`), the staff's reason (`note`,
said to the citizen once the PIN is verified) and who asked (`requested_by`). Existing jobs keep NULL / ''.
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('callback_jobs') as batch:
        batch.add_column(sa.Column('not_after', sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column('note', sa.String(length=200), server_default='', nullable=False))
        batch.add_column(sa.Column('requested_by', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('callback_jobs') as batch:
        batch.drop_column('requested_by')
        batch.drop_column('note')
        batch.drop_column('not_after')
