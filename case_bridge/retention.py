"""Retention (privacy): transcripts and call details older than the configured days are deleted, in batches.

What stays: any call linked to a case that is still open (not resolved, closed or cancelled), any call not yet
ended, any call whose escalation is still open, and the hourly rollup (case_bridge/rollup.py), so the dashboard's
figures for old periods survive the purge. A purged call's interactions on its case stay, unlinked from the call.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import ColumnElement, and_, delete, exists, not_, or_, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session

from case_bridge.models import CallRecord, CallTally, Case, Escalation, Interaction, TranscriptTurn
from case_bridge.unit_of_work import UnitOfWork

FINISHED_CASE = ("resolved", "closed", "cancelled")
BATCH = 500


@dataclass(frozen=True, slots=True)
class PurgeResult:
    calls: int            # call records deleted (with their tallies and turns)
    turns: int            # transcript turns deleted (of calls purged and of calls past the transcript age)


def _purgeable(cutoff: datetime) -> ColumnElement[bool]:
    open_case = exists().where(Case.id == CallRecord.case_id, Case.status.not_in(FINISHED_CASE))
    open_escalation = exists().where(Escalation.call_id == CallRecord.id, Escalation.closed_at.is_(None))
    return and_(CallRecord.started_at < cutoff, CallRecord.ended_at.is_not(None),
                or_(CallRecord.case_id.is_(None), not_(open_case)), not_(open_escalation))


def purge(uow: UnitOfWork, *, now: datetime, call_records_days: int, transcripts_days: int,
          batch: int = BATCH) -> PurgeResult:
    """Delete what is past its age; each batch is its own short transaction (the node keeps writing meanwhile)."""
    calls = turns = 0
    call_cutoff = now - timedelta(days=call_records_days)
    turn_cutoff = now - timedelta(days=transcripts_days)

    def call_batch(s: Session) -> tuple[int, int]:
        ids = [r[0] for r in s.execute(select(CallRecord.id).where(_purgeable(call_cutoff))
                                       .order_by(CallRecord.id).limit(batch))]
        if not ids:
            return 0, 0
        gone = cast(CursorResult[Any], s.execute(delete(TranscriptTurn).where(TranscriptTurn.call_id.in_(ids)))).rowcount
        s.execute(delete(CallTally).where(CallTally.call_id.in_(ids)))
        s.execute(delete(Escalation).where(Escalation.call_id.in_(ids)))
        s.execute(update(Interaction).where(Interaction.call_id.in_(ids)).values(call_id=None))
        s.execute(delete(CallRecord).where(CallRecord.id.in_(ids)))
        return len(ids), int(gone or 0)

    def turn_batch(s: Session) -> int:
        ids = [r[0] for r in s.execute(
            select(TranscriptTurn.id).join(CallRecord, CallRecord.id == TranscriptTurn.call_id)
            .where(_purgeable(turn_cutoff)).order_by(TranscriptTurn.id).limit(batch))]
        if ids:
            s.execute(delete(TranscriptTurn).where(TranscriptTurn.id.in_(ids)))
        return len(ids)

    while True:
        n, t = uow.write(call_batch)
        calls, turns = calls + n, turns + t
        if n < batch:
            break
    while (t := uow.write(turn_batch)):
        turns += t
    return PurgeResult(calls, turns)
