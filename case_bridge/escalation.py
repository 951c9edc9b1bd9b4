"""The call-center queue: escalated calls, what the agent console shows of them, and what the agent does.

Built on `CaseService` (same conventions: synchronous, one short transaction per call, frozen views out, Spanish
errors that are safe to show). The engine side writes through `EscalationRecorder` (the `CaseRecorder` plus the
three `ivr.call.escalation.EscalationJournal` writes, which share its outbox so they reach the database in call order);
the agent console calls `EscalationDesk`.

    desk = EscalationDesk(service)
    desk.queue()                                -> [QueueItem]  (waiting time, state, folio, masked caller)
    desk.take(escalation_id, staff_id)          -> AgentCase    (pops the case: Interaction(channel=call_center))
    desk.agent_case(escalation_id, staff_id)    -> AgentCase    (only for the agent who took it, or an admin)
    desk.transcript(escalation_id, staff_id, after_id) -> [TurnView]   (what the websocket streams)
    desk.add_note(escalation_id, staff_id, text) -> NoteView
    desk.close(escalation_id, staff_id, disposition, status=None, status_note="", expected_version=None)

Errors: EscalationNotFound (an unknown or forged id), AlreadyTaken (another agent has it), EscalationClosed
(a stale page acting on a closed item), NotYours (an agent opening an item someone else took), InvalidInput.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from case_bridge.errors import AlreadyTaken, CaseBridgeError, InvalidInput
from case_bridge.models import CallRecord, Case, Escalation, EscalationNote, Interaction, StaffUser, utcnow
from case_bridge.service import MAX_TEXT, CaseService
from case_bridge.views import STATUS_LABELS, CaseView, TurnView
from foundation.logs import kv

log = logging.getLogger("case_bridge.escalation")

AGENT_DISPOSITIONS: dict[str, str] = {
    "resolved": "Resuelto en la llamada",
    "callback_done": "Se devolvió la llamada",
    "follow_up": "Requiere seguimiento",
    "referred_office": "Canalizado a oficina",
    "no_contact": "No se logró contactar",
    "duplicate": "Duplicado",
}
MAX_NOTE = 2000
MODES = ("refer", "bridge")


class EscalationNotFound(CaseBridgeError):
    pass


class EscalationClosed(CaseBridgeError):
    pass


class NotYours(CaseBridgeError):
    pass


@dataclass(frozen=True, slots=True)
class QueueItem:
    id: int
    call_id: str
    folio: str | None
    reason: str
    mode: str
    requested_at: datetime
    waiting_s: int                      # since requested, until taken (or now)
    state: str                          # waiting | ringing | in_call | transferred | transfer_failed | callback |
                                        # abandoned | ended
    state_label: str
    caller_masked: str
    taken_by: str | None
    callback_requested: bool


@dataclass(frozen=True, slots=True)
class NoteView:
    id: int
    author: str
    text: str
    at: datetime


@dataclass(frozen=True, slots=True)
class AgentCase:
    """What the console pops when an agent takes a call."""
    item: QueueItem
    case: CaseView | None
    transcript: tuple[TurnView, ...]
    notes: tuple[NoteView, ...]
    callback_phone: str | None          # digits, only if the caller asked for a callback
    call_live: bool                     # the portal (or the bridge) still holds the call


STATE_LABELS = {
    "waiting": "En espera (el portal sigue en la llamada)",
    "ringing": "Transfiriendo",
    "in_call": "Llamada en curso",
    "transferred": "Transferida al agente",
    "transfer_failed": "Transferencia fallida",
    "callback": "Pidió que le devuelvan la llamada",
    "abandoned": "El ciudadano colgó",
    "ended": "Llamada terminada",
}


def _state(esc: Escalation, call: CallRecord) -> str:
    if esc.callback_requested:
        return "callback"
    if call.ended_at is None:
        if esc.result_at is None:
            return "ringing" if esc.sip_status is None and esc.mode == "bridge" else "waiting"
        return "in_call"
    if call.disposition in ("transferred", "transfer_failed", "abandoned"):
        return str(call.disposition)
    return "ended"


class EscalationDesk:
    """The queue's service functions (thread-safe like the CaseService it wraps)."""

    def __init__(self, service: CaseService) -> None:
        self.service = service

    # -- engine side ---------------------------------------------------------------------------------------------
    def enqueue(self, call_id: str, reason: str, target: str, mode: str = "refer") -> int:
        """Put a call on the queue (idempotent per call); returns the escalation id."""
        view = self.service.escalate(call_id, reason=reason, target=target)

        def work(s: Session) -> int:
            esc = self._esc(s, view.id)
            esc.mode = mode if mode in MODES else "refer"
            return esc.id

        esc_id = self.service.uow.write(work)
        log.info(kv(event="escalation_queued", call_id=call_id, case=view.folio or "-", reason=reason))
        return esc_id

    def record_result(self, call_id: str, ok: bool, status_code: int, detail: str = "") -> None:
        def work(s: Session) -> None:
            esc = self._esc_for_call(s, call_id)
            esc.sip_status, esc.result_at = int(status_code), utcnow()

        self.service.uow.write(work)

    def record_callback(self, call_id: str, accepted: bool, phone: str | None) -> None:
        digits = "".join(ch for ch in (phone or "") if ch.isdigit())[:20] or None

        def work(s: Session) -> None:
            esc = self._esc_for_call(s, call_id)
            esc.callback_requested = bool(accepted)
            esc.callback_phone = digits if accepted else None

        self.service.uow.write(work)

    # -- console side --------------------------------------------------------------------------------------------
    def queue(self, *, include_taken: bool = True, now: datetime | None = None) -> list[QueueItem]:
        """Open items, oldest first (the waiting list the agents pick from)."""
        now = now or utcnow()
        with self.service.uow.session() as s:
            q = select(Escalation).where(Escalation.closed_at.is_(None)).order_by(Escalation.requested_at)
            if not include_taken:
                q = q.where(Escalation.taken_at.is_(None))
            return [self._item(s, e, now) for e in s.execute(q).scalars()]

    def take(self, escalation_id: int, staff_id: int) -> AgentCase:
        """Claim an item: records Interaction(channel=call_center) on its case; AlreadyTaken if someone has it."""
        self._open_item(escalation_id)
        self.service.take_escalation(escalation_id, staff_id)
        log.info(kv(event="escalation_taken", escalation=escalation_id, staff=staff_id))
        return self.agent_case(escalation_id, staff_id)

    def agent_case(self, escalation_id: int, staff_id: int) -> AgentCase:
        with self.service.uow.session() as s:
            esc = self._owned(s, escalation_id, staff_id)
            call = s.get(CallRecord, esc.call_id)
            assert call is not None
            item = self._item(s, esc, utcnow())
            callback = esc.callback_phone
            live = call.ended_at is None
        case = self.service.find_case(item.folio) if item.folio else None
        return AgentCase(item=item, case=case, transcript=tuple(self.service.transcript(item.call_id)),
                         notes=tuple(self.notes(escalation_id, staff_id)), callback_phone=callback, call_live=live)

    def transcript(self, escalation_id: int, staff_id: int, after_id: int = 0) -> list[TurnView]:
        with self.service.uow.session() as s:
            esc = self._owned(s, escalation_id, staff_id)
            call = s.get(CallRecord, esc.call_id)
            assert call is not None
            call_id = call.sip_call_id
        return self.service.transcript(call_id, after_id)

    def call_live(self, escalation_id: int) -> bool:
        with self.service.uow.session() as s:
            esc = self._esc(s, escalation_id)
            call = s.get(CallRecord, esc.call_id)
            return call is not None and call.ended_at is None

    def notes(self, escalation_id: int, staff_id: int) -> list[NoteView]:
        with self.service.uow.session() as s:
            self._owned(s, escalation_id, staff_id, allow_closed=True)
            rows = s.execute(select(EscalationNote, StaffUser.username).join(StaffUser)
                             .where(EscalationNote.escalation_id == escalation_id).order_by(EscalationNote.id))
            return [NoteView(n.id, username, n.text, n.at) for n, username in rows]

    def add_note(self, escalation_id: int, staff_id: int, text: str) -> NoteView:
        text = text.strip()
        if not text:
            raise InvalidInput("la nota está vacía")
        if len(text) > MAX_NOTE:
            raise InvalidInput(f"la nota tiene más de {MAX_NOTE} caracteres")

        def work(s: Session) -> NoteView:
            esc = self._owned(s, escalation_id, staff_id)
            staff = s.get(StaffUser, staff_id)
            assert staff is not None
            note = EscalationNote(escalation_id=esc.id, staff_id=staff_id, text=text)
            s.add(note)
            s.flush()
            return NoteView(note.id, staff.username, note.text, note.at)

        return self.service.uow.write(work)

    def close(self, escalation_id: int, staff_id: int, disposition: str, *, status: str | None = None,
              status_note: str = "", expected_version: int | None = None) -> QueueItem:
        """The agent's outcome: disposition, optional case status change, the call_center Interaction ended."""
        if disposition not in AGENT_DISPOSITIONS:
            raise InvalidInput("disposición desconocida")
        if status is not None and status not in STATUS_LABELS:
            raise InvalidInput("estado desconocido")
        with self.service.uow.session() as s:
            esc = self._owned(s, escalation_id, staff_id)
            staff = s.get(StaffUser, staff_id)
            assert staff is not None
            actor = staff.username
            folio = self._item(s, esc, utcnow()).folio
        if status is not None:
            if folio is None:
                raise InvalidInput("esta llamada no tiene un caso; no hay estado que cambiar")
            self.service.update_status(folio, status, status_note or AGENT_DISPOSITIONS[disposition],
                                       channel="call_center", actor=actor, expected_version=expected_version)
        notes = "; ".join(n.text for n in self.notes(escalation_id, staff_id))

        def work(s: Session) -> QueueItem:
            esc = self._owned(s, escalation_id, staff_id)
            now = utcnow()
            esc.closed_at, esc.disposition = now, disposition
            key = f"escalation:{esc.id}:taken"
            item = s.execute(select(Interaction).where(Interaction.idempotency_key == key)).scalar_one_or_none()
            if item is not None:
                item.ended_at, item.outcome = now, disposition
                summary = AGENT_DISPOSITIONS[disposition] + (f". Notas: {notes}" if notes else "")
                item.summary = summary[:MAX_TEXT]
            return self._item(s, esc, now)

        closed = self.service.uow.write(work)
        log.info(kv(event="escalation_closed", escalation=escalation_id, case=closed.folio or "-",
                    disposition=disposition))
        return closed

    # -- internals -----------------------------------------------------------------------------------------------
    def _open_item(self, escalation_id: int) -> None:
        with self.service.uow.session() as s:
            esc = self._esc(s, escalation_id)
            if esc.closed_at is not None:
                raise EscalationClosed("esta llamada ya se cerró")

    def _esc(self, s: Session, escalation_id: int) -> Escalation:
        esc = s.get(Escalation, escalation_id) if isinstance(escalation_id, int) and escalation_id > 0 else None
        if esc is None:
            raise EscalationNotFound("llamada desconocida")
        return esc

    def _esc_for_call(self, s: Session, call_id: str) -> Escalation:
        esc = s.execute(select(Escalation).join(CallRecord, Escalation.call_id == CallRecord.id)
                        .where(CallRecord.sip_call_id == call_id)).scalar_one_or_none()
        if esc is None:
            raise EscalationNotFound("llamada desconocida")
        return esc

    def _owned(self, s: Session, escalation_id: int, staff_id: int, *, allow_closed: bool = False) -> Escalation:
        esc = self._esc(s, escalation_id)
        if esc.taken_by != staff_id:
            staff = s.get(StaffUser, staff_id)
            if esc.taken_by is None:
                raise NotYours("primero tome la llamada")
            if staff is None or staff.role != "admin":
                raise NotYours("otro agente atiende esta llamada")
        if esc.closed_at is not None and not allow_closed:
            raise EscalationClosed("esta llamada ya se cerró")
        return esc

    def _item(self, s: Session, esc: Escalation, now: datetime) -> QueueItem:
        call = s.get(CallRecord, esc.call_id)
        assert call is not None
        case_id = esc.case_id or call.case_id
        case = s.get(Case, case_id) if case_id else None
        staff = s.get(StaffUser, esc.taken_by) if esc.taken_by else None
        until = esc.taken_at or esc.closed_at or now
        state = _state(esc, call)
        return QueueItem(id=esc.id, call_id=call.sip_call_id, folio=case.folio if case else None, reason=esc.reason,
                         mode=esc.mode, requested_at=esc.requested_at,
                         waiting_s=max(0, int((until - esc.requested_at).total_seconds())), state=state,
                         state_label=STATE_LABELS[state], caller_masked=call.caller_masked,
                         taken_by=staff.username if staff else None, callback_requested=esc.callback_requested)


__all__ = ["AGENT_DISPOSITIONS", "AgentCase", "AlreadyTaken", "EscalationClosed", "EscalationDesk",
           "EscalationNotFound", "NoteView", "NotYours", "QueueItem"]
