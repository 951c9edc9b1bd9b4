"""call recognizer overload figures

Revision ID: 0011
Revises: 0010

Additive: `call_records.asr_holds` and `call_records.asr_dropped` (server default 0), the per-call counts of the
engine's graceful degradation under recognizer overload (ivr/call/overload.py): hold phrases said ("Un momento, por
favor." past asr.max_wait_ms) and utterances whose decode was dropped and asked on the keypad instead (past
asr.max_wait_keypad_ms). The engine sends them in its call stats (ivr/call/stats.py); a supervisor finds the
degraded calls with the search's "saturadas" filter. Calls before it read 0: nothing was counted then.
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0011'
down_revision: str | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ('asr_holds', 'asr_dropped')


def upgrade() -> None:
    with op.batch_alter_table('call_records') as batch:
        for name in COLUMNS:
            batch.add_column(sa.Column(name, sa.Integer(), server_default='0', nullable=False))


def downgrade() -> None:
    for name in COLUMNS:
        if op.get_context().dialect.name == "sqlite":
            # as in 0009/0010: batch mode would copy the table, which foreign_keys=ON may refuse; SQLite >= 3.35
            op.execute(f"ALTER TABLE call_records DROP COLUMN {name}")
        else:
            op.drop_column('call_records', name)
