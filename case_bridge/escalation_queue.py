"""The escalation queue's core: a call waiting for an agent, taken by one agent, closed.

The agent console's richer views (waiting time, notes, the case popped) are `case_bridge.escalation.EscalationDesk`,
built on these."""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from case_bridge.errors import AlreadyTaken, InvalidInput
from case_bridge.models import CallRecord, Case, Escalation, Interaction, StaffUser, utcnow
from case_bridge.unit_of_work import UnitOfWork, load_call
from case_bridge.views import EscalationView


class EscalationQueue:
    """The escalation topic of `CaseService`."""

    uow: UnitOfWork

    def escalate(self, call_id: str, *, reason: str = "", target: str = "") -> EscalationView:
        def work(s: Session) -> EscalationView:
            call = load_call(s, call_id)
            esc = s.execute(select(Escalation).where(Escalation.call_id == call.id)).scalar_one_or_none()
            if esc is None:
                esc = Escalation(call_id=call.id, case_id=call.case_id, reason=reason[:64], target=target[:255])
                s.add(esc)
                s.flush()
            return _esc_view(s, esc)

        return self.uow.write(work)

    def escalation_queue(self, include_taken: bool = False) -> list[EscalationView]:
        with self.uow.session() as s:
            q = select(Escalation).where(Escalation.closed_at.is_(None)).order_by(Escalation.requested_at)
            if not include_taken:
                q = q.where(Escalation.taken_at.is_(None))
            return [_esc_view(s, e) for e in s.execute(q).scalars()]

    def get_escalation(self, escalation_id: int) -> EscalationView | None:
        with self.uow.session() as s:
            esc = s.get(Escalation, escalation_id)
            return _esc_view(s, esc) if esc else None

    def take_escalation(self, escalation_id: int, staff_id: int) -> EscalationView:
        def work(s: Session) -> EscalationView:
            esc = s.execute(select(Escalation).where(Escalation.id == escalation_id).with_for_update()).scalar_one_or_none()
            if esc is None:
                raise InvalidInput("escalación desconocida")
            if esc.taken_by is not None and esc.taken_by != staff_id:
                raise AlreadyTaken("otro agente ya tomó esta llamada")
            if esc.taken_by is None:
                staff = s.get(StaffUser, staff_id)
                if staff is None:
                    raise InvalidInput("agente desconocido")
                esc.taken_by, esc.taken_at = staff_id, utcnow()
                call = s.get(CallRecord, esc.call_id)
                case_id = esc.case_id or (call.case_id if call else None)
                if case_id:
                    case = s.get(Case, case_id)
                    assert case is not None
                    s.add(Interaction(case_id=case_id, channel="call_center", outcome="agent_took_call",
                                      actor=staff.username, summary="un agente atendió la llamada transferida",
                                      idempotency_key=f"escalation:{esc.id}:taken"))
                    case.current_channel, case.updated_at = "call_center", utcnow()
            return _esc_view(s, esc)

        return self.uow.write(work)

    def close_escalation(self, escalation_id: int, disposition: str) -> EscalationView:
        def work(s: Session) -> EscalationView:
            esc = s.get(Escalation, escalation_id)
            if esc is None:
                raise InvalidInput("escalación desconocida")
            esc.closed_at = esc.closed_at or utcnow()
            esc.disposition = disposition[:32]
            return _esc_view(s, esc)

        return self.uow.write(work)


def _esc_view(s: Session, esc: Escalation) -> EscalationView:
    call = s.get(CallRecord, esc.call_id)
    assert call is not None
    case_id = esc.case_id or call.case_id
    case = s.get(Case, case_id) if case_id else None
    staff = s.get(StaffUser, esc.taken_by) if esc.taken_by else None
    return EscalationView(esc.id, call.sip_call_id, case.folio if case else None, esc.reason, esc.target,
                          esc.requested_at, staff.username if staff else None, esc.taken_at, esc.closed_at,
                          esc.disposition, call.caller_masked)
