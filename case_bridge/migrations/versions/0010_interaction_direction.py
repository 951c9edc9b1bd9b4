"""interaction direction

Revision ID: 0010
Revises: 0009

Additive: `interactions.direction` (inbound | outbound, server default inbound: every channel's contacts so far are
the citizen's, and writers that do not set it stay inbound). Until now a callback's phone interaction was told apart
only through its call (`call_records.direction`, 0009) or its summary ("Llamada saliente:", ivr/callback_call.py's
DIRECTION_NOTE); retention unlinks purged calls from their interactions (call_id NULL), which lost the first.

Online it fills the column from both (the interaction of an outbound call, or a phone interaction whose summary
carries the marker) and rebuilds the case journeys from it. The downgrade rebuilds them the 0009 way (through the
linked call) before dropping the column.
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from case_bridge import journeys

revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OUTBOUND_SUMMARY = "Llamada saliente:%"     # ivr.callback_call.DIRECTION_NOTE (case_bridge may not import ivr)


def upgrade() -> None:
    with op.batch_alter_table('interactions') as batch:
        batch.add_column(sa.Column('direction', sa.String(length=8), server_default='inbound', nullable=False))
    if op.get_context().as_sql:         # offline SQL has no rows to read (run `veratur db` online to fill them)
        return
    conn = op.get_bind()
    conn.execute(sa.text(
        "UPDATE interactions SET direction = 'outbound' WHERE call_id IN "
        "(SELECT id FROM call_records WHERE direction = 'outbound') "
        "OR (channel = 'phone' AND summary LIKE :note)"), {"note": OUTBOUND_SUMMARY})
    journeys.backfill(conn)


def downgrade() -> None:
    if op.get_context().dialect.name == "sqlite":
        # as in 0009: batch mode would copy the table, which foreign_keys=ON may refuse; SQLite >= 3.35 drops in place
        op.execute("ALTER TABLE interactions DROP COLUMN direction")
    else:
        op.drop_column('interactions', 'direction')
    if not op.get_context().as_sql:     # the 0009 figures: a callback known by its linked call
        journeys.backfill(op.get_bind(), directions="calls")
