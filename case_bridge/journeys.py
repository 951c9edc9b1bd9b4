"""The dashboard's cross-channel figure, pre-aggregated per case in `case_journeys`.

Per case: its first phone contact ever (F, the earliest phone interaction) and, per other channel, the first
contact there after F (an interaction or a status change made on that channel, strictly later) with the seconds
between. The dashboard then reads a period's first phone contacts through one covering index instead of joining
every phone contact with every later contact (what it did per request before migration 0007).

Kept exact by recomputing a case's rows from its raw rows whenever a flush writes one of its interactions or
status changes (a session hook installed on every sessionmaker by case_bridge.db), so a late-arriving contact
(an outbox replay of an earlier call, a status change typed in afterwards) moves F or a later contact as a fresh
count would. Core writes bypass the hook: after a bulk load call `backfill`. Each recompute raises the
version of the hours of the old and new F (the dashboard cache's check).
"""
from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import Connection, delete, event, exists, insert, or_, select
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.attributes import get_history

from case_bridge.models import CallRecord, CaseJourney, CaseStatusChange, Interaction
from case_bridge.rollup import bump_versions, hour_of

OTHER_CHANNELS = ("web", "office", "call_center", "kiosk")
BATCH = 500
Directions = bool | Literal["calls"]      # where a callback is told apart: see refresh()


def _aware(t: Any) -> datetime:
    if isinstance(t, str):
        t = datetime.fromisoformat(t)
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def journey_rows(first_phone: datetime, contacts: Iterable[tuple[str, datetime]], case_id: int
                 ) -> list[dict[str, Any]]:
    """A case's rows: the phone row and, per other channel, its first contact after `first_phone`."""
    firsts: dict[str, datetime] = {}
    for channel, at in contacts:
        if channel in OTHER_CHANNELS and at > first_phone and (channel not in firsts or at < firsts[channel]):
            firsts[channel] = at
    rows = [{"case_id": case_id, "channel": "phone", "first_phone_at": first_phone, "at": first_phone,
             "gap_s": 0.0}]
    rows += [{"case_id": case_id, "channel": c, "first_phone_at": first_phone, "at": at,
              "gap_s": (at - first_phone).total_seconds()} for c, at in sorted(firsts.items())]
    return rows


def refresh(conn: Connection, case_ids: Iterable[int], *, directions: Directions = True) -> None:
    """Recompute these cases' journeys from their interactions and status changes. A phone interaction of a call
    the node placed (a callback: `interactions.direction` outbound) is not a contact the citizen made: it is never
    the case's first phone contact. The schema decides how that is known: True (head, migration 0010) the
    interaction's own direction, which stays when retention unlinks the call; "calls" (migration 0009 and 0010's
    downgrade) the linked call's `call_records.direction`; False where neither exists (migration 0007, 0009's
    downgrade): every phone interaction counts, as before 0009."""
    ids = sorted({int(i) for i in case_ids if i is not None})
    for i in range(0, len(ids), BATCH):
        _refresh(conn, ids[i:i + BATCH], directions)


def _refresh(conn: Connection, ids: list[int], directions: Directions = True) -> None:
    old = {cid: _aware(f) for cid, f in conn.execute(
        select(CaseJourney.case_id, CaseJourney.first_phone_at)
        .where(CaseJourney.case_id.in_(ids), CaseJourney.channel == "phone"))}
    phone: dict[int, datetime] = {}
    contacts: dict[int, list[tuple[str, datetime]]] = {}
    q = select(Interaction.case_id, Interaction.channel, Interaction.started_at).where(Interaction.case_id.in_(ids))
    if directions is True:
        q = q.where(Interaction.direction == "inbound")
    elif directions == "calls":
        q = q.where(or_(Interaction.channel != "phone",
                        ~exists().where(CallRecord.id == Interaction.call_id, CallRecord.direction != "inbound")))
    for cid, channel, at in conn.execute(q):
        at = _aware(at)
        if channel == "phone":
            phone[cid] = min(phone.get(cid, at), at)
        else:
            contacts.setdefault(cid, []).append((channel, at))
    for cid, channel, at in conn.execute(select(CaseStatusChange.case_id, CaseStatusChange.channel,
                                                CaseStatusChange.at)
                                         .where(CaseStatusChange.case_id.in_(ids),
                                                CaseStatusChange.channel.in_(OTHER_CHANNELS))):
        contacts.setdefault(cid, []).append((channel, _aware(at)))
    rows = [r for cid, first in sorted(phone.items()) for r in journey_rows(first, contacts.get(cid, ()), cid)]
    conn.execute(delete(CaseJourney).where(CaseJourney.case_id.in_(ids)))
    if rows:
        conn.execute(insert(CaseJourney), rows)
    bump_versions(conn, {hour_of(f) for f in old.values()} | {hour_of(f) for f in phone.values()})


def backfill(conn: Connection, *, directions: Directions = True) -> int:
    """Rebuild every case's journey (migrations 0007, 0009 and 0010, a bulk load); returns the cases with a phone
    contact (a callback's included: `refresh` then finds it has none of the citizen's own)."""
    conn.execute(delete(CaseJourney))
    ids = [int(c) for (c,) in conn.execute(select(Interaction.case_id).where(Interaction.channel == "phone")
                                          .distinct())]
    refresh(conn, ids, directions=directions)
    return len(ids)


# -- the session hook ---------------------------------------------------------------------------------------------
_TRACKED = {Interaction: ("case_id", "channel", "started_at", "direction"),
            CaseStatusChange: ("case_id", "channel", "at")}


def _touched(session: Session) -> set[int]:
    ids: set[int] = set()
    for obj in session.new:
        if type(obj) in _TRACKED:
            ids.add(obj.case_id)
    for obj in session.deleted:
        if type(obj) in _TRACKED:
            ids.add(obj.case_id)
    for obj in session.dirty:
        attrs = _TRACKED.get(type(obj))
        if attrs is None:
            continue
        for attr in attrs:          # a closed call's interaction gets ended_at/outcome: that changes nothing here
            hist = get_history(obj, attr)
            if hist.has_changes():
                ids.add(obj.case_id)
                ids.update(v for v in hist.deleted if attr == "case_id" and v is not None)
    return {i for i in ids if i is not None}


def _after_flush(session: Session, _flush_context: Any) -> None:
    ids = _touched(session)
    if ids:
        refresh(session.connection(), ids)


def install(maker: sessionmaker[Session]) -> None:
    event.listen(maker, "after_flush", _after_flush)
