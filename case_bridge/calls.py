"""Calls and transcripts: the call record, its turns (committed before the reply is spoken), its link to a case."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from case_bridge import hashing
from case_bridge.errors import CallNotFound, InvalidInput
from case_bridge.models import DIRECTIONS, CallRecord, Case, Interaction, TranscriptTurn, utcnow
from case_bridge.rollup import track
from case_bridge.unit_of_work import MAX_TEXT, UnitOfWork, load_call, load_case
from case_bridge.views import CallView, TurnView
from foundation.logs import mask_phone
from foundation.vocabulary import DISPOSITIONS, SPEAKERS


class Calls:
    """The call topic of `CaseService`."""

    uow: UnitOfWork

    def link_call(self, call_id: str, caller: str, *, called: str = "", node: str = "",
                  started_at: datetime | None = None, answered_at: datetime | None = None,
                  direction: str = "inbound") -> CallView:
        """Record a call (idempotent on its SIP Call-ID). `direction="outbound"` for a call the node placed (a
        callback; `caller` is then the node's caller ID and `called` the citizen): the dashboard keeps those apart
        from the calls it received."""
        if direction not in DIRECTIONS:
            raise InvalidInput(f"direction must be one of {DIRECTIONS}")

        def work(s: Session) -> CallView:
            call = s.execute(select(CallRecord).where(CallRecord.sip_call_id == call_id)).scalar_one_or_none()
            if call is None:
                call = CallRecord(sip_call_id=call_id[:255], caller_masked=mask_phone(caller),
                                  caller_hash=hashing.phone_hash(caller), called=called[:64], node=node[:64],
                                  started_at=started_at or utcnow(), answered_at=answered_at,
                                  direction=direction)
                s.add(call)
                s.flush()
            return _call_view(s, call)

        try:
            return self.uow.write(work)
        except IntegrityError:   # the same call recorded concurrently (a replay racing the live write)
            found = self.get_call(call_id)
            assert found is not None
            return found

    def get_call(self, call_id: str) -> CallView | None:
        with self.uow.session() as s:
            try:
                return _call_view(s, load_call(s, call_id))
            except CallNotFound:
                return None

    def link_call_case(self, call_id: str, folio: str, *, summary: str = "") -> None:
        def work(s: Session) -> None:
            call, case = load_call(s, call_id), load_case(s, folio)
            with track(s, call):
                call.case_id = case.id
            phone_interaction(s, call, case, summary or call.summary or "")

        self.uow.write(work)

    def set_call_summary(self, call_id: str, summary: str) -> None:
        def work(s: Session) -> None:
            call = load_call(s, call_id)
            call.summary = summary[:MAX_TEXT]
            for item in s.execute(select(Interaction).where(Interaction.call_id == call.id)).scalars():
                item.summary = summary[:MAX_TEXT]

        self.uow.write(work)

    def add_turn(self, call_id: str, speaker: str, text: str, intent: str | None = None,
                 confidence: float | None = None, *, at: datetime | None = None,
                 idempotency_key: str | None = None) -> bool:
        if speaker not in SPEAKERS:
            raise InvalidInput(f"speaker must be one of {SPEAKERS}")
        at = at or utcnow()
        key = (idempotency_key or f"{call_id}:{speaker}:{at.isoformat()}")[:255]

        def work(s: Session) -> bool:
            if s.execute(select(TranscriptTurn.id).where(TranscriptTurn.idempotency_key == key)).first():
                return False
            call = load_call(s, call_id)
            with track(s, call):     # a turn that arrives after the close still reaches the rollup
                s.add(TranscriptTurn(call_id=call.id, speaker=speaker, text=text[:MAX_TEXT], intent=intent,
                                     confidence=confidence, at=at, idempotency_key=key))
            return True

        try:
            return self.uow.write(work)
        except IntegrityError:   # a concurrent writer stored the same key first
            return False

    def close_call(self, call_id: str, disposition: str, *, transfer_target: str | None = None,
                   ended_at: datetime | None = None) -> None:
        if disposition not in DISPOSITIONS:
            raise InvalidInput(f"disposition must be one of {DISPOSITIONS}")

        def work(s: Session) -> None:
            call = load_call(s, call_id)
            if call.ended_at is not None:
                return  # already closed: a replayed close changes nothing
            with track(s, call):
                call.ended_at = ended_at or utcnow()
                call.disposition, call.transfer_target = disposition, transfer_target
                call.duration_s = max(0.0, (call.ended_at - (call.answered_at or call.started_at)).total_seconds())
            for item in s.execute(select(Interaction).where(Interaction.call_id == call.id,
                                                            Interaction.channel == "phone")).scalars():
                item.ended_at, item.outcome = call.ended_at, disposition

        self.uow.write(work)

    def close_calls_of_node(self, node: str, disposition: str = "lost", *, started_before: datetime,
                            ended_at: datetime | None = None) -> int:
        """Close every call still open on `node` that started before `started_before` (the worker that held them
        died, so nobody else will); returns how many were closed. Calls already closed keep their ending."""
        if disposition not in DISPOSITIONS:
            raise InvalidInput(f"disposition must be one of {DISPOSITIONS}")

        def work(s: Session) -> int:
            ended = ended_at or utcnow()
            open_calls = s.execute(select(CallRecord).where(
                CallRecord.node == node[:64], CallRecord.ended_at.is_(None),
                CallRecord.started_at < started_before)).scalars().all()
            for call in open_calls:
                with track(s, call):
                    call.ended_at, call.disposition = ended, disposition
                for item in s.execute(select(Interaction).where(Interaction.call_id == call.id,
                                                                Interaction.channel == "phone")).scalars():
                    item.ended_at, item.outcome = ended, disposition
            return len(open_calls)

        return self.uow.write(work)

    def transcript(self, call_id: str, after_id: int = 0) -> list[TurnView]:
        with self.uow.session() as s:
            call = load_call(s, call_id)
            rows = s.execute(select(TranscriptTurn).where(TranscriptTurn.call_id == call.id,
                                                          TranscriptTurn.id > after_id)
                             .order_by(TranscriptTurn.id)).scalars()
            return [TurnView(t.id, call_id, t.speaker, t.text, t.intent, t.confidence, t.at) for t in rows]


def _call_view(s: Session, call: CallRecord) -> CallView:
    folio = s.get(Case, call.case_id).folio if call.case_id else None  # type: ignore[union-attr]
    return CallView(call.sip_call_id, call.caller_masked, call.node, call.started_at, call.answered_at,
                    call.ended_at, call.disposition, call.transfer_target, folio, call.summary)

def phone_interaction(s: Session, call: CallRecord, case: Case, summary: str) -> Interaction:
    key = f"call:{call.sip_call_id}:case:{case.id}"[:200]
    item = s.execute(select(Interaction).where(Interaction.idempotency_key == key)).scalar_one_or_none()
    if item is None:
        item = Interaction(case_id=case.id, channel="phone", started_at=call.started_at, outcome="in_call",
                           summary=summary[:MAX_TEXT], call_id=call.id, idempotency_key=key,
                           direction=call.direction)      # a callback's interaction is outbound like its call
        s.add(item)
        case.current_channel, case.updated_at = "phone", utcnow()
    elif summary:
        item.summary = summary[:MAX_TEXT]
    return item
