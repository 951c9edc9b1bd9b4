"""The case-bridge service on real SQLite and real PostgreSQL (each test runs on both)."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session

from case_bridge import folio as folios
from case_bridge.errors import (
    AlreadyTaken,
    CallNotFound,
    ChannelNotAllowed,
    InvalidInput,
    StaleCase,
    UnknownTramite,
)
from case_bridge.models import Case
from case_bridge.service import CaseService
from case_bridge.views import CitizenInfo

from .conftest import TEST_TRAMITES

CURP = "GOMJ800101HVZMRN04"


def _open(svc: CaseService, **kw: object) -> tuple[str, str]:
    kw.setdefault("citizen", CitizenInfo("Juan Gómez", curp=CURP, phone="228 123 4567"))
    opened = svc.open_case("licencia_conducir", "phone", **kw)  # type: ignore[arg-type]
    return opened.case.folio, opened.pin


def test_open_case_gives_checked_folio_and_hashed_pin(svc: CaseService) -> None:
    opened = svc.open_case("licencia_conducir", "web", citizen=CitizenInfo("Ana", curp=None))
    assert folios.is_valid(opened.case.folio) and len(opened.case.folio) == 8
    assert opened.pin.isdigit() and len(opened.pin) == 4
    assert opened.case.status == "awaiting_citizen"
    assert opened.case.missing == ("Identificación oficial", "Comprobante de domicilio")
    with svc.uow.session() as s:  # the PIN is not stored in clear
        row = s.query(Case).filter_by(folio=opened.case.folio).one()
        assert opened.pin not in row.pin_hash and row.pin_hash.startswith("scrypt$")


def test_open_case_is_idempotent_by_key(svc: CaseService) -> None:
    first = svc.open_case("acta_nacimiento", "kiosk", idempotency_key="kiosk-7:req-1")
    again = svc.open_case("acta_nacimiento", "kiosk", idempotency_key="kiosk-7:req-1")
    assert again.created is False and first.created is True
    assert (again.case.folio, again.pin) == (first.case.folio, first.pin)
    assert len(again.case.interactions) == 1


def test_open_case_concurrent_same_key_makes_one_case(svc: CaseService) -> None:
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: svc.open_case("acta_nacimiento", "web", idempotency_key="dup-key-1"),
                                range(4)))
    assert len({r.case.folio for r in results}) == 1
    assert sum(r.created for r in results) == 1


def test_open_case_refuses_unknown_tramite_and_channel(svc: CaseService) -> None:
    with pytest.raises(UnknownTramite):
        svc.open_case("no_existe", "web")
    with pytest.raises(ChannelNotAllowed):
        svc.open_case("solo_oficina", "phone")
    with pytest.raises(InvalidInput):
        svc.open_case("acta_nacimiento", "telegraph")
    with pytest.raises(InvalidInput):
        svc.open_case("acta_nacimiento", "web", citizen=CitizenInfo("X", curp="SHORT"))


def test_status_for_with_pin_and_with_curp(svc: CaseService) -> None:
    folio, pin = _open(svc)
    spaced = f"{folio[:4]} {folio[4:]}"
    ok = svc.status_for(spaced, pin=pin, client="10.0.0.1")
    assert ok.ok and ok.case is not None and ok.case.folio == folio
    by_curp = svc.status_for(folio, curp_last4=CURP[-4:].lower())
    assert by_curp.ok
    assert svc.status_for(folio, curp_last4="ZZ99").reason == "denied"


def test_status_only_lookup_matches_the_full_one(svc: CaseService) -> None:
    folio, pin = _open(svc)
    svc.update_status(folio, "in_review", "revisando documentos", channel="office")
    full = svc.status_for(folio, pin=pin).case
    brief = svc.status_for(folio, pin=pin, timeline=False).case
    assert full is not None and brief is not None
    assert brief.interactions == () and brief.history == full.history[-1:]
    assert brief.history[0].note == "revisando documentos"
    same = ("folio", "status", "tramite", "missing", "citizen_name", "citizen_curp", "version", "created_at")
    assert all(getattr(brief, f) == getattr(full, f) for f in same)
    assert svc.status_for(folio, pin="9" + pin[1:] if pin[0] != "9" else "0" + pin[1:], timeline=False).reason == "denied"
    assert svc.status_for(folio, curp_last4=CURP[-4:], timeline=False).ok


def test_unknown_folio_and_wrong_pin_look_the_same(svc: CaseService) -> None:
    folio, pin = _open(svc)
    wrong_pin = svc.status_for(folio, pin=str((int(pin) + 1) % 10000).zfill(4))
    payload = "1234567"
    unknown = svc.status_for(payload + folios.damm_digit(payload), pin="1111")
    assert wrong_pin.reason == unknown.reason == "denied"
    assert wrong_pin.case is None and unknown.case is None and wrong_pin.message == unknown.message


def test_malformed_folio_is_refused_before_lookup_and_not_counted(svc: CaseService) -> None:
    folio, pin = _open(svc)
    misheard = folio[:3] + str((int(folio[3]) + 1) % 10) + folio[4:]
    for bad in (misheard, "123", "abcdefgh", folio + "1", ""):
        assert svc.status_for(bad, pin=pin).reason == "malformed"
    assert svc.limiter.check(f"folio:{folio}").failures == 0
    assert svc.status_for(folio, pin=pin).ok


def test_three_failures_lock_the_folio_even_for_the_right_pin(svc: CaseService) -> None:
    folio, pin = _open(svc)
    wrong = str((int(pin) + 5) % 10000).zfill(4)
    first = svc.status_for(folio, pin=wrong)
    assert first.reason == "denied" and first.attempts_left == 2
    assert svc.status_for(folio, pin=wrong).attempts_left == 1
    third = svc.status_for(folio, pin=wrong)
    assert third.reason == "locked" and third.retry_after_s and third.retry_after_s > 60
    assert svc.status_for(folio, pin=pin).reason == "locked"
    svc.reset_verification_lock(folio)
    assert svc.status_for(folio, pin=pin).ok


def test_lockout_falls_back_to_the_database_when_redis_is_down(db_url: str) -> None:
    dead = CaseService.from_url(db_url, redis_url="redis://127.0.0.1:1/0")
    try:
        dead.upsert_tramites(TEST_TRAMITES)
        folio, pin = _open(dead)
        wrong = str((int(pin) + 3) % 10000).zfill(4)
        assert dead.status_for(folio, pin=wrong).reason == "denied"
        assert dead.limiter.last_backend == "database"
        assert not dead.limiter.redis_available     # paused (REDIS_RETRY_S): the next commands skip the wait
        dead.status_for(folio, pin=wrong)
        assert dead.status_for(folio, pin=wrong).reason == "locked"
        assert dead.status_for(folio, pin=pin).reason == "locked"
    finally:
        dead.close()


def test_client_limit_slows_walking_through_folios_without_locking_the_address(svc: CaseService) -> None:
    """Issue 13: the address is slowed (throttle_s, applied by the web), never refused the right PIN."""
    folio, pin = _open(svc)
    denials = []
    for i in range(12):
        payload = str(2000000 + i)
        denials.append(svc.status_for(payload + folios.damm_digit(payload), pin="0000", client="198.51.100.7"))
    assert [d.reason for d in denials] == ["denied"] * 12
    assert [d.throttle_s > 0 for d in denials] == [False] * 9 + [True] * 3
    result = svc.status_for(folio, pin=pin, client="198.51.100.7")
    assert result.ok and result.throttle_s >= 1.0
    other = svc.status_for(folio, pin=pin, client="198.51.100.8")
    assert other.ok and other.throttle_s == 0.0


def test_status_history_and_expected_version(svc: CaseService) -> None:
    folio, _ = _open(svc)
    view = svc.find_case(folio)
    assert view is not None
    changed = svc.update_status(folio, "in_review", "Documentos recibidos", channel="office", actor="clerk1",
                                expected_version=view.version)
    assert [h.to_status for h in changed.history] == ["awaiting_citizen", "in_review"]
    assert changed.history[-1].note == "Documentos recibidos" and changed.history[-1].actor == "clerk1"
    with pytest.raises(StaleCase):
        svc.update_status(folio, "closed", "tarde", channel="web", expected_version=view.version)
    with pytest.raises(InvalidInput):
        svc.update_status(folio, "bogus", "x", channel="office")


def test_continue_on_web_complete_schedule_finish(svc: CaseService) -> None:
    opened = svc.open_case("acta_nacimiento", "phone", citizen=CitizenInfo("Luz", curp=CURP))
    folio = opened.case.folio
    with pytest.raises(InvalidInput):
        svc.finish_online(folio)                    # CURP still missing
    with pytest.raises(InvalidInput):
        svc.complete_missing(folio, {"Pasaporte": "x"}, channel="web")
    view = svc.complete_missing(folio, {"CURP": CURP}, channel="web")
    assert view.missing == () and view.status == "in_review" and view.data["CURP"] == CURP
    when = datetime.now(UTC) + timedelta(days=3)
    with pytest.raises(InvalidInput):
        svc.schedule_appointment(folio, "Oficina inventada", when, channel="web")
    with pytest.raises(InvalidInput):
        svc.schedule_appointment(folio, "Registro Civil Xalapa", datetime.now(UTC) - timedelta(days=1), channel="web")
    view = svc.schedule_appointment(folio, "Registro Civil Xalapa", when, channel="web")
    assert view.status == "appointment_scheduled" and view.appointment_office == "Registro Civil Xalapa"
    other = svc.open_case("licencia_conducir", "web", missing=[])
    with pytest.raises(ChannelNotAllowed):
        svc.finish_online(other.case.folio)         # licencia finishes only at the office
    done = svc.finish_online(svc.open_case("acta_nacimiento", "web", missing=[]).case.folio)
    assert done.status == "resolved" and done.interactions[-1].outcome == "finished_online"


def test_call_records_turns_and_idempotency(svc: CaseService) -> None:
    call_id = f"call-{datetime.now(UTC).timestamp()}@test"
    first = svc.link_call(call_id, "+52 228 123 4567", called="veratur", node="w0")
    again = svc.link_call(call_id, "+52 228 123 4567", called="veratur", node="w0")
    assert first.caller_masked == again.caller_masked == "********4567"
    assert svc.add_turn(call_id, "caller", "quiero mi licencia", "tramite_licencia", 0.91, idempotency_key=f"{call_id}#1")
    assert not svc.add_turn(call_id, "caller", "quiero mi licencia", idempotency_key=f"{call_id}#1")
    assert svc.add_turn(call_id, "portal", "Claro.", idempotency_key=f"{call_id}#2")
    with pytest.raises(CallNotFound):
        svc.add_turn("no-such-call", "caller", "hola", idempotency_key="x#1")
    with pytest.raises(InvalidInput):
        svc.add_turn(call_id, "robot", "hola")
    opened = svc.open_case("licencia_conducir", "phone", call_id=call_id, summary="solicitó requisitos de licencia")
    svc.link_call_case(call_id, opened.case.folio)  # the recorder's link after the action's open: no duplicate
    svc.close_call(call_id, "completed")
    svc.close_call(call_id, "abandoned")            # a replayed/late close changes nothing
    call = svc.get_call(call_id)
    assert call is not None and call.disposition == "completed" and call.folio == opened.case.folio
    view = svc.find_case(opened.case.folio)
    assert view is not None
    phone = [i for i in view.interactions if i.channel == "phone"]
    assert len(phone) == 1 and phone[0].summary == "solicitó requisitos de licencia"
    assert phone[0].ended_at is not None and phone[0].outcome == "completed"
    turns = svc.transcript(call_id)
    assert [t.speaker for t in turns] == ["caller", "portal"] and turns[0].intent == "tramite_licencia"
    assert svc.transcript(call_id, after_id=turns[0].id)[0].text == "Claro."


def test_escalation_queue_and_take(svc: CaseService) -> None:
    call_id = f"esc-{datetime.now(UTC).timestamp()}@test"
    svc.link_call(call_id, "2299998888")
    folio, _ = _open(svc, call_id=call_id)
    esc = svc.escalate(call_id, reason="caller_asked", target="sip:agentes@127.0.0.1:5090")
    assert svc.escalate(call_id).id == esc.id and esc.folio == folio
    assert esc.id in [e.id for e in svc.escalation_queue()]
    a = svc.create_staff(f"ag{esc.id}a", "secreto123", "agent")
    b = svc.create_staff(f"ag{esc.id}b", "secreto123", "agent")
    taken = svc.take_escalation(esc.id, a.id)
    assert taken.taken_by == a.username
    with pytest.raises(AlreadyTaken):
        svc.take_escalation(esc.id, b.id)
    assert esc.id not in [e.id for e in svc.escalation_queue()]
    view = svc.find_case(folio)
    assert view is not None and view.current_channel == "call_center"
    assert [i.channel for i in view.interactions].count("call_center") == 1


def test_staff_auth(svc: CaseService) -> None:
    name = f"clerk{datetime.now(UTC).microsecond}"
    user = svc.create_staff(name, "contraseña-segura", "clerk", "Oficina Xalapa")
    assert svc.authenticate(name, "contraseña-segura") == user
    assert svc.authenticate(name, "otra-cosa-123") is None
    assert svc.authenticate("nadie", "contraseña-segura") is None
    with pytest.raises(InvalidInput):
        svc.create_staff(name, "contraseña-segura", "clerk")
    with pytest.raises(InvalidInput):
        svc.create_staff("x" + name, "corta", "clerk")
    with pytest.raises(InvalidInput):
        svc.create_staff("y" + name, "contraseña-segura", "root")


def test_many_channels_at_once_lose_no_update(svc: CaseService) -> None:
    """16 writers on one case (missing items, interactions, status) at the same time: every write survives."""
    items = [f"Documento {i}" for i in range(8)]
    folio = svc.open_case("licencia_conducir", "web", missing=items).case.folio
    before = svc.find_case(folio)
    assert before is not None

    def write(i: int) -> None:
        if i < 8:
            svc.complete_missing(folio, {items[i]: f"valor {i}"}, channel="web")
        else:
            svc.add_interaction(folio, "office", "visit", f"visita {i}")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, range(16)))
    after = svc.find_case(folio)
    assert after is not None
    assert after.missing == () and len(after.data) == 8
    assert len(after.interactions) == len(before.interactions) + 16
    assert after.status == "in_review"


@pytest.mark.postgres
def test_two_sessions_interleaved_on_postgres_retry_instead_of_losing(pg_database: str) -> None:
    """Force the lost-update interleaving: both sessions read version N, both write. The second must not
    overwrite the first; the service re-reads and re-applies it."""
    svc = CaseService.from_url(pg_database)
    try:
        svc.upsert_tramites(TEST_TRAMITES)
        folio = svc.open_case("licencia_conducir", "web", missing=["A", "B"]).case.folio
        both_read = threading.Barrier(2, timeout=10)
        runs: list[str] = []

        def remove(item: str) -> None:
            def work(s: Session) -> None:
                case = s.query(Case).filter_by(folio=folio).one()
                runs.append(item)
                if runs.count(item) == 1:
                    both_read.wait()        # only the first pass of each waits: retries go straight through
                case.missing = [m for m in case.missing if m != item]
                case.data = {**case.data, item: "ok"}
            svc.uow.write(work)

        threads = [threading.Thread(target=remove, args=(x,)) for x in "AB"]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        view = svc.find_case(folio)
        assert view is not None
        assert view.missing == () and set(view.data) == {"A", "B"}
        assert len(runs) == 3      # one of the two ran twice: it saw the conflict and re-applied
    finally:
        svc.close()
