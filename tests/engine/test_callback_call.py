"""The status-change callback call end to end: the dialer (a real pjsua2 edge in the test process) calls a sipp
phone, the real espeak-ng voice speaks, the phone keys by RFC 4733; the case, the job and the transcript are
checked in a real database. Phone scripts: keys the PIN and listens (status heard, job done), keys 9 at once
(opt-out honoured for every job of the number), answers and stays silent (retried as `silent`)."""
from __future__ import annotations

import asyncio
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from case_bridge.models import CallbackAttempt, CallbackJob, CallRecord, Case, Interaction, TranscriptTurn
from case_bridge.service import CaseService
from foundation.config import Settings
from ivr.callback_call import DIRECTION_NOTE, CallbackConversation
from ivr.dialer import Dialer
from testkit import pcaps, sipp
from testkit.db import TEST_TRAMITES, migrated_sqlite
from testkit.outbound import outbound_worker
from testkit.ports import HOST, free_udp_port

pytestmark = pytest.mark.sip
T0 = datetime(2026, 12, 2, 16, 0, tzinfo=UTC)     # 10:00 in Xalapa
NUMBER = "2281234567"
PJSUA_OFFER_TE_PT = 120

PHONE = """<?xml version="1.0" encoding="UTF-8" ?>
<scenario name="citizen phone answering a callback">
  <recv request="INVITE">
    <!-- pjsua2 offers telephone-event as payload type 120: the phone answers with it and keys with it. -->
    <action><ereg regexp="a=rtpmap:120 telephone-event/8000" search_in="body" check_it="true" assign_to="te"/></action>
  </recv>
  <Reference variables="te"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]ans
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:[local_ip]:[local_port]>
Content-Type: application/sdp
Content-Length: [len]

v=0
o=phone 1 1 IN IP4 [local_ip]
s=-
c=IN IP4 [media_ip]
t=0 0
m=audio [auto_media_port] RTP/AVP 0 120
a=rtpmap:0 PCMU/8000
a=rtpmap:120 telephone-event/8000
a=fmtp:120 0-16
]]></send>
  <recv request="ACK"/>
  <pause milliseconds="1500"/>
  @KEYS@
  <recv request="BYE" timeout="60000"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
</scenario>
"""


@pytest.fixture
def service(tmp_path: Path):  # type: ignore[no-untyped-def]
    svc = CaseService.from_url(migrated_sqlite(tmp_path / "d.db"))
    svc.upsert_tramites(TEST_TRAMITES)
    yield svc
    svc.close()


async def place(tmp_path: Path, service: CaseService, keys: str | None, *, first_input_s: float = 8.0,
                pin_starts: str = "") -> tuple[str, str, str]:
    """One callback call to a sipp phone that keys `keys` 1.5 s after answering; (outcome, call id, folio)."""
    phone_port = free_udp_port()
    base = Settings()
    settings = base.model_copy(update={"data_dir": tmp_path, "outbound": base.outbound.model_copy(update={
        "enabled": True, "allowed_prefixes": ["228"], "route": f"sip:{HOST}:{phone_port}",
        "caller_name": "el Gobierno del Estado"})})
    opened = service.open_case("licencia_conducir", "phone", missing=["Comprobante de domicilio"])
    while not opened.pin.startswith(pin_starts):       # PINs are random: open cases until one starts so
        opened = service.open_case("licencia_conducir", "phone", missing=["Comprobante de domicilio"])
    folio = opened.case.folio
    service.update_status(folio, "awaiting_citizen", "falta comprobante", channel="office")
    service.request_callback(folio, NUMBER, allowed_prefixes=["228"], now=T0)
    digits = opened.pin if keys == "PIN" else keys
    action = ""
    if digits:
        pcap = pcaps.write_dtmf_pcap(tmp_path / f"keys-{digits}.pcap", digits, pt=PJSUA_OFFER_TE_PT)
        action = f'<nop><action><exec play_pcap_audio="{pcap}"/></action></nop>'
    script = tmp_path / "phone.xml"
    script.write_text(PHONE.replace("@KEYS@", action))
    phone = await sipp.start_async(script, cwd=tmp_path, port=phone_port, timeout_s=90)
    try:
        async with outbound_worker(settings, tmp_path, "cb/w0") as (edge, tts):
            talk = CallbackConversation(service, tts, settings, first_input_s=first_input_s, key_timeout_s=4.0)
            dialer = Dialer(service, settings, "w0", edge, talk, capacity=4, active_calls=lambda: 0,
                            clock=lambda: T0)
            [task] = await dialer.run_once()
            outcome = await asyncio.wait_for(task, 80)
            code, text = await phone.wait(30)
            assert code == 0, text
    finally:
        phone.kill()
    with service.uow.session() as s:
        call_id = s.execute(select(CallRecord.sip_call_id).order_by(CallRecord.id.desc())).scalars().first()
    assert call_id
    return outcome, call_id, folio


def turns(service: CaseService, call_id: str) -> list[tuple[str, str]]:
    with service.uow.session() as s:
        call = s.execute(select(CallRecord).where(CallRecord.sip_call_id == call_id)).scalar_one()
        rows = s.execute(select(TranscriptTurn).where(TranscriptTurn.call_id == call.id)
                         .order_by(TranscriptTurn.id)).scalars()
        return [(r.speaker, r.text) for r in rows]


async def test_pin_then_status_and_missing(tmp_path: Path, service: CaseService) -> None:
    outcome, call_id, folio = await place(tmp_path, service, "PIN")
    assert outcome == "answered"
    said = turns(service, call_id)
    portal = " ".join(text for who, text in said if who == "portal")
    assert said[0][0] == "portal" and "Le llama el Gobierno del Estado" in said[0][1]
    assert "licencia" not in said[0][1].lower()                  # nothing about the case before the PIN
    assert ("caller", "(PIN, 4 dígitos)") in said               # the PIN itself is never stored
    assert "Faltan datos o documentos" in portal and "Comprobante de domicilio" in portal
    assert [c.state for c in service.callbacks_for(folio)] == ["done"]
    with service.uow.session() as s:
        items = s.execute(select(Interaction).where(Interaction.summary.startswith(DIRECTION_NOTE))).scalars().all()
        assert [(i.channel, i.direction) for i in items] == [("phone", "outbound")]     # migration 0010


async def test_a_pin_that_starts_with_nine_is_a_pin_not_the_opt_out(tmp_path: Path, service: CaseService) -> None:
    """9 or 0 followed at once by more keys is a PIN (keyed without a pause), not the opt-out or agent choice."""
    outcome, call_id, folio = await place(tmp_path, service, "PIN", pin_starts="9")
    assert outcome == "answered"
    assert ("caller", "(PIN, 4 dígitos)") in turns(service, call_id)
    assert [c.state for c in service.callbacks_for(folio)] == ["done"]


async def test_nine_stops_every_call_to_the_number(tmp_path: Path, service: CaseService) -> None:
    outcome, call_id, folio = await place(tmp_path, service, "9")
    assert outcome == "opt_out"
    assert [c.state for c in service.callbacks_for(folio)] == ["opted_out"]
    assert ("caller", "9") in turns(service, call_id)
    detail = service.call_detail(call_id)          # the dashboard keeps it out of the calls received
    assert detail is not None and detail.direction == "outbound"
    with service.uow.session() as s:
        attempts = s.execute(select(CallbackAttempt.outcome, CallbackAttempt.sip_call_id)
                             .join(CallbackJob, CallbackJob.id == CallbackAttempt.job_id)
                             .join(Case, Case.id == CallbackJob.case_id).where(Case.folio == folio)).all()
    assert [tuple(a) for a in attempts] == [("opt_out", call_id)]
    other = service.open_case("licencia_conducir", "web").case.folio
    assert service.request_callback(other, NUMBER, allowed_prefixes=["228"], now=T0).state == "opted_out"


async def test_silent_answer_is_retried(tmp_path: Path, service: CaseService) -> None:
    outcome, _, folio = await place(tmp_path, service, None, first_input_s=2.0)
    assert outcome == "silent"
    [job] = service.callbacks_for(folio)
    assert (job.state, job.last_outcome, job.attempts) == ("pending", "silent", 1)


def test_a_worker_process_dials_a_queued_callback(tmp_path: Path, service: CaseService) -> None:
    """`veratur ivr` with outbound.enabled picks the queued job from the database and calls the phone; the phone
    keys 9 and the number is opted out."""
    from testkit.worker import Worker

    phone_port = free_udp_port()
    folio = service.open_case("licencia_conducir", "phone").case.folio
    job = service.request_callback(folio, NUMBER, allowed_prefixes=["228"])
    pcap = pcaps.write_dtmf_pcap(tmp_path / "nine.pcap", "9", pt=PJSUA_OFFER_TE_PT)
    script = tmp_path / "phone.xml"
    script.write_text(PHONE.replace("@KEYS@", f'<nop><action><exec play_pcap_audio="{pcap}"/></action></nop>'))
    db_url = str(service.engine.url)
    phone = subprocess.Popen(sipp.one_call_args(script, target=None, port=phone_port, timeout_s=60),
                             cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    worker = Worker(tmp_path / "w", env={
        "VERATUR__DATABASE__URL": db_url, "VERATUR__OUTBOUND__ENABLED": "true",
        "VERATUR__OUTBOUND__ROUTE": f"sip:{HOST}:{phone_port}", "VERATUR__OUTBOUND__ALLOWED_PREFIXES": '["228"]',
        "VERATUR__TTS__CACHE_DIR": str(tmp_path / "tts"), "VERATUR__SIP__MEDIA_TIMEOUT_S": "30"})
    (tmp_path / "w").mkdir()
    worker.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and service.callbacks_for(folio)[0].state in ("pending", "active"):
            time.sleep(0.5)
        [after] = service.callbacks_for(folio)
        assert (after.id, after.state, after.last_outcome) == (job.id, "opted_out", "opt_out"), worker.log()[-3000:]
        assert phone.wait(30) == 0, (phone.stderr.read() if phone.stderr else b"")[-2000:]
    finally:
        if phone.poll() is None:
            phone.kill()
            phone.wait(5)
        assert worker.stop() == 0, worker.log()[-3000:]
    assert NUMBER not in worker.log()                           # masked in the worker's log lines
