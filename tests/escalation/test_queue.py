"""The call-center queue over the case-bridge service, on SQLite and PostgreSQL: enqueue, waiting time, take
(pops the case, Interaction(channel=call_center)), transcript, notes, disposition + case status, and bad ids."""
from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest

from case_bridge.errors import AlreadyTaken, InvalidInput, StaleCase
from case_bridge.escalation import (
    EscalationClosed,
    EscalationDesk,
    EscalationNotFound,
    NotYours,
)
from case_bridge.models import utcnow
from case_bridge.service import CaseService
from case_bridge.views import CitizenInfo
from ivr.call.escalation import EscalationJournal
from ivr.call.leg import CallInfo
from ivr.call.recorder import EscalationRecorder
from tests.escalation.conftest import unique


def a_call_with_case(svc: CaseService) -> tuple[str, str]:
    call_id = unique("call-")
    svc.link_call(call_id, "2281234567", called="veratur", node="t/w0")
    opened = svc.open_case("licencia_conducir", "phone", call_id=call_id,
                           citizen=CitizenInfo("Ana López", curp=unique("LOMA900101MVZPRN")[:18].upper().ljust(18, "0"),
                                               phone="2281234567"))
    svc.add_turn(call_id, "portal", "Bienvenido.", idempotency_key=f"{call_id}#1")
    svc.add_turn(call_id, "caller", "[DTMF 0]", "agent", idempotency_key=f"{call_id}#2")
    return call_id, opened.case.folio


def staff(svc: CaseService, role: str = "agent") -> int:
    return svc.create_staff(unique("agente_"), "contraseña-segura", role).id


def test_enqueue_take_pops_case_and_transcript(svc: CaseService, desk: EscalationDesk) -> None:
    call_id, folio = a_call_with_case(svc)
    esc_id = desk.enqueue(call_id, "caller_request", "sip:agentes@127.0.0.1:5090", "refer")
    assert desk.enqueue(call_id, "caller_request", "sip:agentes@127.0.0.1:5090", "refer") == esc_id   # idempotent
    item = next(i for i in desk.queue() if i.id == esc_id)
    assert item.folio == folio and item.state == "waiting" and item.caller_masked == "******4567"
    later = next(i for i in desk.queue(now=utcnow() + timedelta(seconds=42)) if i.id == esc_id)
    assert later.waiting_s >= 42
    agent = staff(svc)
    popped = desk.take(esc_id, agent)
    assert popped.case is not None and popped.case.folio == folio and popped.case.citizen_name == "Ana López"
    assert [t.text for t in popped.transcript] == ["Bienvenido.", "[DTMF 0]"]
    assert popped.call_live and popped.item.taken_by is not None
    channels = [i.channel for i in svc.find_case(folio).interactions]  # type: ignore[union-attr]
    assert "call_center" in channels
    # more turns committed while the portal still talks: the console asks for what is after the last id
    svc.add_turn(call_id, "portal", "Le comunico con un agente.", idempotency_key=f"{call_id}#3")
    newer = desk.transcript(esc_id, agent, after_id=popped.transcript[-1].id)
    assert [t.text for t in newer] == ["Le comunico con un agente."]
    frozen = desk.queue(now=utcnow() + timedelta(hours=1))
    assert next(i for i in frozen if i.id == esc_id).waiting_s == popped.item.waiting_s   # stops when taken


def test_second_agent_cannot_take_or_read_it(svc: CaseService, desk: EscalationDesk) -> None:
    call_id, _ = a_call_with_case(svc)
    esc_id = desk.enqueue(call_id, "no_match", "sip:agentes@127.0.0.1:5090")
    first, second, admin = staff(svc), staff(svc), staff(svc, "admin")
    desk.take(esc_id, first)
    with pytest.raises(AlreadyTaken):
        desk.take(esc_id, second)
    with pytest.raises(NotYours):
        desk.transcript(esc_id, second)
    with pytest.raises(NotYours):
        desk.add_note(esc_id, second, "no es mío")
    assert desk.agent_case(esc_id, admin).item.id == esc_id          # a supervisor may look


def test_notes_disposition_and_status_update(svc: CaseService, desk: EscalationDesk) -> None:
    call_id, folio = a_call_with_case(svc)
    esc_id = desk.enqueue(call_id, "caller_request", "sip:agentes@127.0.0.1:5090")
    agent = staff(svc)
    popped = desk.take(esc_id, agent)
    note = desk.add_note(esc_id, agent, "Pide cita en Xalapa.")
    assert note.text == "Pide cita en Xalapa." and desk.notes(esc_id, agent)[0].id == note.id
    with pytest.raises(InvalidInput):
        desk.add_note(esc_id, agent, "   ")
    with pytest.raises(InvalidInput):
        desk.close(esc_id, agent, "whatever")
    assert popped.case is not None
    with pytest.raises(StaleCase):                                   # the case changed since the page was drawn
        desk.close(esc_id, agent, "follow_up", status="in_review", expected_version=popped.case.version - 1)
    closed = desk.close(esc_id, agent, "follow_up", status="in_review", status_note="Revisar documentos",
                        expected_version=popped.case.version)
    assert closed.id == esc_id and all(i.id != esc_id for i in desk.queue())
    case = svc.find_case(folio)
    assert case is not None and case.status == "in_review" and case.history[-1].channel == "call_center"
    center = [i for i in case.interactions if i.channel == "call_center"]
    assert center[-1].outcome == "follow_up" and "Pide cita en Xalapa." in center[-1].summary
    assert center[-1].ended_at is not None
    with pytest.raises(EscalationClosed):                            # a stale page acting on a closed item
        desk.add_note(esc_id, agent, "tarde")
    with pytest.raises(EscalationClosed):
        desk.take(esc_id, agent)


def test_forged_and_unknown_ids(svc: CaseService, desk: EscalationDesk) -> None:
    agent = staff(svc)
    for bad in (0, -1, 10**9):
        with pytest.raises(EscalationNotFound):
            desk.take(bad, agent)
        with pytest.raises(EscalationNotFound):
            desk.transcript(bad, agent)
    with pytest.raises(EscalationNotFound):
        desk.record_result("no-such-call", False, 486)


def test_call_without_case_and_callback(svc: CaseService, desk: EscalationDesk) -> None:
    call_id = unique("call-")
    svc.link_call(call_id, "2299876543")
    esc_id = desk.enqueue(call_id, "no_input", "sip:agentes@127.0.0.1:5090", "bridge")
    assert next(i for i in desk.queue() if i.id == esc_id).state == "ringing"
    desk.record_result(call_id, False, 486)
    desk.record_callback(call_id, True, "229-987-6543")
    svc.close_call(call_id, "transfer_failed", transfer_target="sip:agentes@127.0.0.1:5090")
    item = next(i for i in desk.queue() if i.id == esc_id)
    assert item.state == "callback" and item.folio is None and item.callback_requested
    agent = staff(svc)
    popped = desk.take(esc_id, agent)
    assert popped.case is None and popped.callback_phone == "2299876543" and not popped.call_live
    with pytest.raises(InvalidInput):                               # no case: no status to change
        desk.close(esc_id, agent, "callback_done", status="resolved")
    desk.close(esc_id, agent, "callback_done")
    call = svc.get_call(call_id)
    assert call is not None and call.disposition == "transfer_failed" and call.ended_at is not None


async def test_recorder_journals_in_call_order(svc: CaseService, tmp_path: Path) -> None:
    rec = EscalationRecorder(svc, data_dir=tmp_path, name=unique("w"))
    assert isinstance(rec, EscalationJournal)
    await rec.start()
    info = CallInfo(call_id=unique("rec-"), caller="2281112233", called="veratur", node="t/w0")
    await rec.call_started(info)
    await rec.add_turn(info.call_id, "caller", "[DTMF 0]", "agent")
    await rec.escalation_requested(info.call_id, "caller_request", "sip:agentes@127.0.0.1:5090", "refer")
    await rec.escalation_result(info.call_id, False, 404, "Not Found")
    await rec.callback_requested(info.call_id, False, None)
    await rec.call_ended(info.call_id, "transfer_failed", "sip:agentes@127.0.0.1:5090")
    await asyncio.sleep(0)
    desk = EscalationDesk(svc)
    item = next(i for i in desk.queue() if i.call_id == info.call_id)
    assert item.state == "transfer_failed" and not item.callback_requested
    await rec.stop()
