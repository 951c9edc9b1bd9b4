"""The outbound dialer (ivr/dialer.py) against real SIP: a real pjsua2 edge in the test process places the
callback calls, sipp plays the citizen's phone (busy 486, never answers, answers); the outcomes land in the
callback jobs on a real database. Share limit and outcome mapping as units beside it."""
from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from case_bridge.callbacks import CallbackView
from case_bridge.service import CaseService
from foundation.config import Settings
from ivr.dialer import Dialer, outbound_slots, outcome_for, target_uri
from ivr.sip.edge import EdgeConfig, SipEdge
from ivr.sip.leg import SipLeg
from testkit import sipp
from testkit.db import TEST_TRAMITES, migrated_sqlite
from testkit.ports import HOST, free_udp_port

T0 = datetime(2026, 12, 2, 16, 0, tzinfo=UTC)     # 10:00 in Xalapa


def test_outbound_share_never_takes_the_last_slot_or_more_than_the_share() -> None:
    assert outbound_slots(4, 0, 0, 0.25) == 1
    assert outbound_slots(4, 1, 1, 0.25) == 0                 # the share is used
    assert outbound_slots(8, 3, 0, 0.5) == 4
    assert outbound_slots(8, 7, 0, 0.5) == 0                  # one slot always left for an inbound caller
    assert outbound_slots(8, 5, 2, 0.5) == 2
    assert outbound_slots(4, 0, 0, 0.1) == 0                  # a share below one slot dials nothing
    assert [outcome_for(c) for c in (486, 603, 408, 480, 487, 404, 503)] == [
        "busy", "busy", "no_answer", "no_answer", "no_answer", "failed", "failed"]
    assert target_uri("2281234567", "sip:10.0.0.5:5060") == "sip:2281234567@10.0.0.5:5060"


UAS = """<?xml version="1.0" encoding="UTF-8" ?>
<scenario name="citizen phone">
  <recv request="INVITE">
    <action>
      <ereg regexp="X-Veratur-Callback: *([0-9]+)" search_in="msg" check_it="true" assign_to="h,job"/>
      <ereg regexp="P-Asserted-Identity: *&quot;([^&quot;]+)&quot;" search_in="msg" check_it="true"
            assign_to="p,who"/>
      <log message="JOB=[$job] WHO=[$who]"/>
    </action>
  </recv>
  @ANSWER@
  <Reference variables="h,p"/>
</scenario>
"""
BUSY = """<send><![CDATA[
SIP/2.0 486 Busy Here
[last_Via:]
[last_From:]
[last_To:];tag=[pid]busy
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
<recv request="ACK"/>"""
RING = """<send><![CDATA[
SIP/2.0 180 Ringing
[last_Via:]
[last_From:]
[last_To:];tag=[pid]ring
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
<recv request="CANCEL"/>
<send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]ring
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
<send><![CDATA[
SIP/2.0 487 Request Terminated
[last_Via:]
[last_From:]
[last_To:];tag=[pid]ring
[last_Call-ID:]
CSeq: [cseq] INVITE
Content-Length: 0

]]></send>
<recv request="ACK"/>"""
ANSWER = """<send><![CDATA[
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
m=audio [media_port] RTP/AVP 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
]]></send>
<recv request="ACK"/>
<recv request="BYE"/>
<send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>"""


@pytest.fixture
def service(tmp_path: Path):  # type: ignore[no-untyped-def]
    svc = CaseService.from_url(migrated_sqlite(tmp_path / "d.db"))
    svc.upsert_tramites(TEST_TRAMITES)
    yield svc
    svc.close()


@pytest.mark.sip
@pytest.mark.parametrize(("answer", "expected", "ring_timeout_s"), [
    (BUSY, "busy", 10.0), (RING, "no_answer", 2.0), (ANSWER, "answered", 10.0)])
async def test_callback_call_outcomes(tmp_path: Path, service: CaseService, answer: str, expected: str,
                                      ring_timeout_s: float) -> None:
    phone_port = free_udp_port()
    base = Settings()
    settings = base.model_copy(update={"data_dir": tmp_path, "outbound": base.outbound.model_copy(update={
        "enabled": True, "allowed_prefixes": ["228"], "route": f"sip:{HOST}:{phone_port}",
        "caller_name": "Gobierno de Prueba"})})
    folio = service.open_case("licencia_conducir", "phone").case.folio
    job = service.request_callback(folio, "228 123 4567", allowed_prefixes=["228"], now=T0)
    script = tmp_path / "phone.xml"
    script.write_text(UAS.replace("@ANSWER@", answer))
    phone = await sipp.start_async(script, cwd=tmp_path, port=phone_port, timeout_s=30)
    config = dataclasses.replace(EdgeConfig.from_settings(settings, 0, "dialer/w0"), port=0, transports=("udp",),
                                 randomize_rtp_port=True, allowed_peers=(ipaddress.ip_network("127.0.0.0/8"),))
    edge = SipEdge(config)
    await edge.start()

    async def converse(leg: SipLeg, view: CallbackView) -> str:
        # The unit seam: the real conversation (who calls, PIN, status) is the engine's; here the node hangs up.
        await asyncio.sleep(0.5)
        await leg.hangup()
        await leg.wait_ended(5)
        return "answered"

    try:
        dialer = Dialer(service, settings, "w0", edge, converse, capacity=4, active_calls=lambda: 0,
                        clock=lambda: T0, ring_timeout_s=ring_timeout_s)
        tasks = await dialer.run_once()
        assert len(tasks) == 1
        assert await asyncio.wait_for(tasks[0], 30) == expected
        code, text = await phone.wait(20)
        assert code == 0, text
        assert phone.logged_value("JOB") == str(job.id)
        assert "WHO=Gobierno de Prueba" in phone.logged().replace("[", "").replace("]", "")
    finally:
        phone.kill()
        await edge.stop(0)
    [after] = service.callbacks_for(folio)
    assert after.last_outcome == expected and after.attempts == 1
    if expected == "answered":
        assert after.state == "done"
    else:                                           # retried at the schedule's first spacing
        assert after.state == "pending"
        assert after.next_attempt_at == T0 + timedelta(seconds=settings.outbound.callback.spacing_s[0])


ANSWER_RR = ANSWER.replace("[last_CSeq:]\nContact:", "[last_CSeq:]\n[last_Record-Route:]\nContact:", 1)


@pytest.mark.sip
@pytest.mark.parametrize(("answer", "expected", "spoof"), [
    (BUSY, "busy", False), (ANSWER_RR, "answered", False), (ANSWER_RR, "failed", True)])
async def test_callback_call_through_the_front_door(tmp_path: Path, service: CaseService, answer: str,
                                                    expected: str, spoof: bool) -> None:
    """Behind Kamailio the dialer calls the front door, which relays to outbound.route only with the node's
    token (a wrong one: 403, the phone never rings)."""
    from testkit.node import run_kamailio, write_settings
    phone_port = free_udp_port()
    logs = tmp_path / "logs"
    logs.mkdir()
    _, settings = write_settings(tmp_path, sip={"workers": 1}, outbound={
        "enabled": True, "allowed_prefixes": ["228"], "route": f"sip:{HOST}:{phone_port}"})
    folio = service.open_case("licencia_conducir", "phone").case.folio
    service.request_callback(folio, "2281234567", allowed_prefixes=["228"], now=T0)
    script = tmp_path / "phone.xml"
    script.write_text(UAS.replace("@ANSWER@", answer))
    async with run_kamailio(settings, logs) as k:
        token_file = settings.path(settings.data_dir) / "kamailio" / "outbound.token"
        if spoof:
            token_file.write_text("not-the-token\n")
        phone = await sipp.start_async(script, cwd=tmp_path, port=phone_port, timeout_s=15)
        config = dataclasses.replace(EdgeConfig.from_settings(settings, settings.sip.worker_port(0), "fd/w0"),
                                     transports=("udp",), randomize_rtp_port=True,
                                     allowed_peers=(ipaddress.ip_network("127.0.0.0/8"),))
        edge = SipEdge(config)
        await edge.start()

        async def converse(leg: SipLeg, view: CallbackView) -> str:
            await asyncio.sleep(0.5)
            await leg.hangup()
            await leg.wait_ended(5)
            return "answered"

        try:
            dialer = Dialer(service, settings, "w0", edge, converse, capacity=4, active_calls=lambda: 0,
                            clock=lambda: T0, ring_timeout_s=10)
            assert dialer.dial_via == f"sip:{HOST}:{settings.sip.port}"
            [task] = await dialer.run_once()
            assert await asyncio.wait_for(task, 30) == expected
            code, text = await phone.wait(20)
        finally:
            phone.kill()
            await edge.stop(0)
        log = k.log_text()
    if spoof:
        assert "reason=not_a_worker" in log and service.callbacks_for(folio)[0].detail == "SIP 403 Forbidden"
        assert phone.logged_value("JOB") is None                       # the phone never rang
    else:
        assert code == 0, text
        assert "event=outbound_relayed" in log
        assert "not-the-token" not in log
