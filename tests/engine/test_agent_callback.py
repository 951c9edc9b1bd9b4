"""An agent's call back (ivr.agent_callback) with real peers: the real dialer on a pjsua2 edge, the real
conversation with espeak-ng, a sipp phone as the citizen (answers, keys 1 by RFC 4733) and a sipp phone as the
agent's own extension (`escalation.agent_uris`).

- bridge mode: the agent's phone gets an INVITE carrying X-Veratur-Case and the User-to-User case header, answers,
  talks 3 s and hangs up; the node hangs up the citizen; job done ("connected to the agent"), the call record is
  outbound, `transferred` to the agent's URI, and its phone interaction is outbound;
- refer mode: the citizen's phone gets the REFER whose Refer-To is the agent's own URI with the case headers;
- the agent's phone busy: the citizen is told, the job is failed with "agent did not answer: SIP 486" (the agent
  retries from the console); key 2: the citizen does not want to talk now, nobody is called;
- the agent deactivated, or their agent_uris entry removed, after the click: the citizen is not called at all.
"""
from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from case_bridge.models import CallRecord, Interaction
from case_bridge.service import CaseService
from case_bridge.views import CitizenInfo
from foundation.config import Settings
from ivr.call.escalation import decode_uui
from ivr.callback_call import CallbackConversation
from ivr.dialer import Dialer
from testkit import pcaps, sipp
from testkit.db import TEST_TRAMITES, migrated_sqlite
from testkit.outbound import outbound_worker
from testkit.ports import HOST, free_udp_port
from tests.engine.test_callback_call import PHONE, PJSUA_OFFER_TE_PT
from tests.engine.test_callback_transfer import REFER_AND_NOTIFY

pytestmark = [pytest.mark.sip, pytest.mark.timeout(150)]
T0 = datetime(2026, 12, 2, 16, 0, tzinfo=UTC)
NUMBER = "2281234567"
AGENT = "ana"

# The agent's own phone: checks the case headers of the INVITE, answers, talks TALK_MS, hangs up itself (a UAS
# sending BYE: From = the INVITE's To with our tag, To = the INVITE's From, to the INVITE's Contact).
AGENT_PHONE = """<?xml version="1.0" encoding="UTF-8" ?>
<scenario name="agent phone">
  <recv request="INVITE" timeout="60000">
    <action>
      <ereg regexp="X-Veratur-Case: *@FOLIO@" search_in="msg" check_it="true" assign_to="case"/>
      <ereg regexp="User-to-User: *([0-9a-f]+);encoding=hex;purpose=veratur-case" search_in="msg" check_it="true"
            assign_to="uui,uuihex"/>
      <ereg regexp="[[:space:]]From: *([^[:cntrl:]]+)" search_in="msg" check_it="true" assign_to="f,ifrom"/>
      <ereg regexp="[[:space:]]To: *([^[:cntrl:]]+)" search_in="msg" check_it="true" assign_to="t,ito"/>
      <ereg regexp="Contact: *&lt;([^&gt;]+)&gt;" search_in="msg" check_it="true" assign_to="c,icontact"/>
      <ereg regexp="^INVITE ([^ ]+) SIP" search_in="msg" check_it="true" assign_to="r,ruri"/>
      <log message="UUI=[$uuihex]"/>
      <log message="RURI=[$ruri]"/>
    </action>
  </recv>
  <Reference variables="case,uui,f,t,c,r"/>
@ANSWER@
</scenario>
"""
ANSWER_TALK_HANG_UP = """  <send><![CDATA[
SIP/2.0 180 Ringing
[last_Via:]
[last_From:]
[last_To:];tag=[pid]agt[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
  <pause milliseconds="300"/>
  <send retrans="500"><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]agt[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:agent@[local_ip]:[local_port]>
Content-Type: application/sdp
Content-Length: [len]

v=0
o=agent 1 1 IN IP4 [local_ip]
s=-
c=IN IP4 [media_ip]
t=0 0
m=audio [auto_media_port] RTP/AVP 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
]]></send>
  <recv request="ACK"/>
  <pause milliseconds="@TALK_MS@"/>
  <send retrans="500"><![CDATA[
BYE [$icontact] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: [$ito];tag=[pid]agt[call_number]
To: [$ifrom]
Call-ID: [call_id]
CSeq: 2 BYE
Contact: <sip:agent@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Length: 0

]]></send>
  <recv response="200"/>
"""
BUSY = """  <send><![CDATA[
SIP/2.0 486 Busy Here
[last_Via:]
[last_From:]
[last_To:];tag=[pid]agt[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
  <recv request="ACK"/>
  <Reference variables="ifrom,ito,icontact"/>
"""


def agent_phone_script(path: Path, folio: str, answer: str, talk_ms: int = 3000) -> Path:
    path.write_text(AGENT_PHONE.replace("@FOLIO@", folio).replace("@ANSWER@", answer)
                    .replace("@TALK_MS@", str(talk_ms)))
    return path


def citizen_phone_script(path: Path, tmp_path: Path, keys: str, after_keys: str = "") -> Path:
    pcap = pcaps.write_dtmf_pcap(tmp_path / f"citizen-{keys}.pcap", keys, pt=PJSUA_OFFER_TE_PT)
    path.write_text(PHONE.replace("@KEYS@", f'<nop><action><exec play_pcap_audio="{pcap}"/></action></nop>'
                                  + after_keys))
    return path


def agent_settings(tmp_path: Path, phone_port: int, agent_port: int, mode: str = "bridge") -> Settings:
    base = Settings()
    return base.model_copy(update={
        "data_dir": tmp_path,
        "outbound": base.outbound.model_copy(update={
            "enabled": True, "allowed_prefixes": ["228"], "route": f"sip:{HOST}:{phone_port}",
            "caller_name": "el Gobierno del Estado"}),
        "escalation": base.escalation.model_copy(update={
            "mode": mode, "transfer_timeout_s": 8.0, "agent_uris": {AGENT: f"sip:2001@{HOST}:{agent_port}"}})})


@pytest.fixture
def service(tmp_path: Path):  # type: ignore[no-untyped-def]
    svc = CaseService.from_url(migrated_sqlite(tmp_path / "d.db"))
    svc.upsert_tramites(TEST_TRAMITES)
    svc.create_staff(AGENT, "clave-de-prueba-larga", "agent", "Ana")
    yield svc
    svc.close()


async def call_back(service: CaseService, settings: Settings, tmp_path: Path, folio: str,
                    phones: list[sipp.SippRun]) -> str:
    """Queue the agent's call back for `folio` and let the real dialer place it; the outcome once the call (and
    any bridge) is over. `phones` are already listening."""
    job, created = service.request_agent_return(folio, None, agent=AGENT, allowed_prefixes=["228"], now=T0)
    assert created and job.state == "pending"
    try:
        async with outbound_worker(settings, tmp_path, "agentcb/w0") as (edge, tts):
            talk = CallbackConversation(service, tts, settings, first_input_s=10.0, key_timeout_s=4.0)
            dialer = Dialer(service, settings, "w0", edge, talk, capacity=4, active_calls=lambda: 0,
                            clock=lambda: T0)
            [task] = await dialer.run_once()
            outcome = await asyncio.wait_for(task, 90)
            for phone in phones:
                code, text = await phone.wait(30)
                assert code == 0, text
            state = await edge.snapshot()
            assert state.calls == 0 and state.legs == 0              # both calls gone, nothing left bridged
            assert dialer.outbound_active == 0
    finally:
        for phone in phones:
            phone.kill()
    return outcome


def last_call(service: CaseService) -> tuple[CallRecord, Interaction]:
    with service.uow.session() as s:
        call = s.execute(select(CallRecord).order_by(CallRecord.id.desc())).scalars().first()
        assert call is not None
        item = s.execute(select(Interaction).where(Interaction.call_id == call.id)).scalar_one()
        s.expunge_all()
        return call, item


def new_folio(service: CaseService) -> str:
    return service.open_case("licencia_conducir", "phone",
                             citizen=CitizenInfo("Rosa Hernández", phone=NUMBER)).case.folio


async def test_bridge_the_citizen_to_the_agent_who_asked_with_the_case(tmp_path: Path, service: CaseService) -> None:
    phone_port, agent_port = free_udp_port(), free_udp_port()
    settings = agent_settings(tmp_path, phone_port, agent_port)
    folio = new_folio(service)
    citizen = await sipp.start_async(citizen_phone_script(tmp_path / "citizen.xml", tmp_path, "1"), cwd=tmp_path,
                                     port=phone_port, timeout_s=90)
    agent = await sipp.start_async(agent_phone_script(tmp_path / "agent.xml", folio, ANSWER_TALK_HANG_UP),
                                   cwd=tmp_path, port=agent_port, timeout_s=90)
    assert await call_back(service, settings, tmp_path, folio, [citizen, agent]) == "answered"
    uui = decode_uui(f"{agent.logged_value('UUI')};encoding=hex;purpose=veratur-case")
    call, item = last_call(service)
    assert uui == {"case": folio, "call": call.sip_call_id, "why": "caller_request"}
    assert (agent.logged_value("RURI") or "").startswith(f"sip:2001@{HOST}:{agent_port}")   # that agent's phone
    assert (call.direction, call.disposition, call.transfer_target) == ("outbound", "transferred",
                                                                        f"sip:2001@{HOST}:{agent_port}")
    assert call.ended_at is not None
    assert (item.channel, item.direction) == ("phone", "outbound") and "un agente devuelve" in (item.summary or "")
    [job] = service.callbacks_for(folio)
    assert (job.state, job.attempts, job.last_outcome, job.detail, job.requested_by) == (
        "done", 1, "answered", "connected to the agent", AGENT)
    said = [t.text for t in service.transcript(call.sip_call_id)]
    assert "le devuelve la llamada que usted pidió" in said[0] and folio not in said[0]   # nothing of the case
    assert "1" in said and any("Le comunico con el agente" in t for t in said)


async def test_refer_mode_sends_the_citizen_to_the_agents_own_uri(tmp_path: Path, service: CaseService) -> None:
    phone_port = free_udp_port()
    agent_uri = f"sip:2001@{HOST}:{free_udp_port()}"
    settings = agent_settings(tmp_path, phone_port, int(agent_uri.rsplit(":", 1)[1]), mode="refer")
    folio = new_folio(service)
    citizen = await sipp.start_async(citizen_phone_script(tmp_path / "citizen.xml", tmp_path, "1",
                                                          REFER_AND_NOTIFY.replace("@FOLIO@", folio)),
                                     cwd=tmp_path, port=phone_port, timeout_s=90)
    assert await call_back(service, settings, tmp_path, folio, [citizen]) == "answered"
    refer_to = citizen.logged_value("REFER_TO") or ""
    assert refer_to.startswith(f"<{agent_uri}?") and f"X-Veratur-Case={folio}" in refer_to
    [job] = service.callbacks_for(folio)
    assert (job.state, job.detail) == ("done", "transferred to the agent")
    call, _ = last_call(service)
    assert (call.disposition, call.transfer_target) == ("transferred", agent_uri)


async def test_the_agents_phone_busy_is_recorded_for_the_agent(tmp_path: Path, service: CaseService) -> None:
    phone_port, agent_port = free_udp_port(), free_udp_port()
    settings = agent_settings(tmp_path, phone_port, agent_port)
    folio = new_folio(service)
    citizen = await sipp.start_async(citizen_phone_script(tmp_path / "citizen.xml", tmp_path, "1"), cwd=tmp_path,
                                     port=phone_port, timeout_s=90)
    agent = await sipp.start_async(agent_phone_script(tmp_path / "agent.xml", folio, BUSY), cwd=tmp_path,
                                   port=agent_port, timeout_s=90)
    assert await call_back(service, settings, tmp_path, folio, [citizen, agent]) == "failed"
    [job] = service.callbacks_for(folio)
    assert (job.state, job.attempts, job.detail) == ("failed", 1, "agent did not answer: SIP 486")
    call, _ = last_call(service)
    assert call.disposition == "transfer_failed"
    said = [t.text for t in service.transcript(call.sip_call_id)]
    assert "el agente no pudo atender" in said[-1]


async def test_key_two_calls_nobody(tmp_path: Path, service: CaseService) -> None:
    phone_port = free_udp_port()
    settings = agent_settings(tmp_path, phone_port, free_udp_port())
    folio = new_folio(service)
    citizen = await sipp.start_async(citizen_phone_script(tmp_path / "citizen.xml", tmp_path, "2"), cwd=tmp_path,
                                     port=phone_port, timeout_s=90)
    assert await call_back(service, settings, tmp_path, folio, [citizen]) == "answered"
    [job] = service.callbacks_for(folio)
    assert (job.state, job.detail) == ("done", "the citizen did not want to talk now")
    call, _ = last_call(service)
    assert call.disposition == "completed" and call.transfer_target is None


@pytest.mark.parametrize("gone", ["deactivated", "no_uri"])
async def test_an_agent_gone_since_the_click_means_no_call(tmp_path: Path, service: CaseService, gone: str) -> None:
    phone_port = free_udp_port()
    settings = agent_settings(tmp_path, phone_port, free_udp_port())
    folio = new_folio(service)
    job, _ = service.request_agent_return(folio, None, agent=AGENT, allowed_prefixes=["228"], now=T0)
    if gone == "deactivated":
        service.set_active(AGENT, False)
    else:
        settings = settings.model_copy(update={"escalation": settings.escalation.model_copy(
            update={"agent_uris": {}})})
    placed: list[str] = []

    class Recorder:                     # the real edge, watched: nothing may be dialled
        def __init__(self, edge: object) -> None:
            self.edge = edge

        async def call(self, uri: str, headers: dict[str, str] | None = None, timeout_s: float = 30.0):  # type: ignore[no-untyped-def]
            placed.append(uri)
            return await self.edge.call(uri, headers, timeout_s=timeout_s)  # type: ignore[attr-defined]

    async with outbound_worker(settings, tmp_path, "agentcb/w1") as (edge, tts):
        talk = CallbackConversation(service, tts, settings, first_input_s=10.0, key_timeout_s=4.0)
        dialer = Dialer(service, settings, "w1", Recorder(edge), talk, capacity=4, active_calls=lambda: 0,
                        clock=lambda: T0)
        [task] = await dialer.run_once()
        assert await asyncio.wait_for(task, 20) == "failed"
    assert placed == []
    [view] = service.callbacks_for(folio)
    assert (view.id, view.state, view.attempts) == (job.id, "failed", 1)
    assert view.detail == ("agent account unknown or inactive" if gone == "deactivated" else "agent has no SIP URI")


def test_a_worker_process_calls_back_and_bridges_to_the_agent(tmp_path: Path, service: CaseService) -> None:
    """`veratur ivr` (outbound.enabled, escalation.mode bridge, escalation.agent_uris from the environment) picks
    the agent's call back from the database: the citizen's phone keys 1, the agent's phone gets the case."""
    import subprocess
    import time

    from testkit.worker import Worker

    phone_port, agent_port = free_udp_port(), free_udp_port()
    folio = new_folio(service)
    job, _ = service.request_agent_return(folio, None, agent=AGENT, allowed_prefixes=["228"])
    citizen_script = citizen_phone_script(tmp_path / "citizen.xml", tmp_path, "1")
    agent_script = agent_phone_script(tmp_path / "agent.xml", folio, ANSWER_TALK_HANG_UP)
    citizen = subprocess.Popen(sipp.one_call_args(citizen_script, target=None, port=phone_port, timeout_s=90),
                               cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    agent = subprocess.Popen(sipp.one_call_args(agent_script, target=None, port=agent_port, timeout_s=90,
                                                log_file=tmp_path / "agent.log"),
                             cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    worker = Worker(tmp_path / "w", env={
        "VERATUR__DATABASE__URL": str(service.engine.url), "VERATUR__OUTBOUND__ENABLED": "true",
        "VERATUR__OUTBOUND__ROUTE": f"sip:{HOST}:{phone_port}", "VERATUR__OUTBOUND__ALLOWED_PREFIXES": '["228"]',
        "VERATUR__ESCALATION__MODE": "bridge",
        f"VERATUR__ESCALATION__AGENT_URIS__{AGENT.upper()}": f"sip:2001@{HOST}:{agent_port}",   # key lower-cased
        "VERATUR__TTS__CACHE_DIR": str(tmp_path / "tts"), "VERATUR__SIP__MEDIA_TIMEOUT_S": "30"})
    (tmp_path / "w").mkdir()
    worker.start()
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and service.callbacks_for(folio)[0].state in ("pending", "active"):
            time.sleep(0.5)
        [after] = service.callbacks_for(folio)
        assert (after.id, after.state, after.detail) == (job.id, "done", "connected to the agent"), \
            worker.log()[-3000:]
        assert agent.wait(60) == 0, (agent.stderr.read() if agent.stderr else b"")[-2000:]
        assert citizen.wait(30) == 0, (citizen.stderr.read() if citizen.stderr else b"")[-2000:]
        deadline = time.monotonic() + 10            # the call record is closed once the bridge has ended
        while time.monotonic() < deadline:
            call, _ = last_call(service)
            if call.disposition == "transferred":
                break
            time.sleep(0.3)
        assert (call.direction, call.disposition, call.transfer_target) == (
            "outbound", "transferred", f"sip:2001@{HOST}:{agent_port}")
        # the agent's phone checked X-Veratur-Case: <folio> (check_it) and logged the User-to-User data
        found = re.search(r"UUI=([0-9a-f]+)", (tmp_path / "agent.log").read_text(errors="replace"))
        assert found, "the agent's phone logged no UUI"
        assert decode_uui(f"{found.group(1)};encoding=hex;purpose=veratur-case") == {
            "case": folio, "call": call.sip_call_id, "why": "caller_request"}
    finally:
        for proc in (citizen, agent):
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
        assert worker.stop() == 0, worker.log()[-3000:]
    assert NUMBER not in worker.log()                           # masked in the worker's log lines
    assert "callback_bridge_ended" in worker.log()              # the dialer held the slot until the bridge ended
