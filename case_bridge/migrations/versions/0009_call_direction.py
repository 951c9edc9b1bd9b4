"""call direction and callback attempts

Revision ID: 0009
Revises: 0008

Additive: `call_records.direction` (inbound | outbound, server default inbound: rows written before it and writers
that do not set it stay inbound), `callback_attempts` (one row per dialled callback attempt and its outcome).

Online it also fills them from what exists: the calls the callback conversation placed are marked outbound (their
summary starts "Llamada saliente:", ivr/callback_call.py's DIRECTION_NOTE, or they are a job's last SIP Call-ID),
each job that was dialled gets one attempt row with its last outcome (the earlier attempts of a job dialled before
0009 were never kept), and the rollup and the case journeys are rebuilt so the inbound figures stop counting those
calls. The downgrade rebuilds both the pre-0009 way (every call inbound) before dropping the column.
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from case_bridge import journeys, rollup

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OUTBOUND_SUMMARY = "Llamada saliente:%"     # ivr.callback_call.DIRECTION_NOTE (case_bridge may not import ivr)


def upgrade() -> None:
    with op.batch_alter_table('call_records') as batch:
        batch.add_column(sa.Column('direction', sa.String(length=8), server_default='inbound', nullable=False))
    op.create_table('callback_attempts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('outcome', sa.String(length=32), nullable=False),
    sa.Column('sip_call_id', sa.String(length=200), nullable=True),
    sa.ForeignKeyConstraint(['job_id'], ['callback_jobs.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('callback_attempts') as batch:
        batch.create_index('ix_callback_attempts_at_outcome', ['at', 'outcome'], unique=False)
        batch.create_index(batch.f('ix_callback_attempts_job_id'), ['job_id'], unique=False)
    if op.get_context().as_sql:         # offline SQL has no rows to read (run `veratur db` online to fill them)
        return
    conn = op.get_bind()
    conn.execute(sa.text(
        "UPDATE call_records SET direction = 'outbound' WHERE summary LIKE :note OR sip_call_id IN "
        "(SELECT sip_call_id FROM callback_jobs WHERE sip_call_id IS NOT NULL)"), {"note": OUTBOUND_SUMMARY})
    conn.execute(sa.text(
        "INSERT INTO callback_attempts (job_id, at, outcome, sip_call_id) "
        "SELECT id, updated_at, last_outcome, sip_call_id FROM callback_jobs "
        "WHERE attempts > 0 AND last_outcome <> ''"))
    rollup.backfill(conn)
    journeys.backfill(conn, directions="calls")     # interactions.direction comes with 0010


def downgrade() -> None:
    with op.batch_alter_table('callback_attempts') as batch:
        batch.drop_index(batch.f('ix_callback_attempts_job_id'))
        batch.drop_index('ix_callback_attempts_at_outcome')
    op.drop_table('callback_attempts')
    if op.get_context().dialect.name == "sqlite":
        # SQLite >= 3.35 drops a plain column in place; batch mode would copy call_records into a new table and
        # drop the old one, which foreign_keys=ON refuses while turns and interactions point at its rows
        op.execute("ALTER TABLE call_records DROP COLUMN direction")
    else:
        op.drop_column('call_records', 'direction')
    if not op.get_context().as_sql:     # the pre-0009 figures: callbacks counted with the calls received again
        rollup.backfill(op.get_bind(), directions=False)
        journeys.backfill(op.get_bind(), directions=False)
