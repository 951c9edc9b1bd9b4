"""A callback call handed to an agent (key 0) carries its case: a real pjsua2 edge (the dialer, the real
conversation, espeak-ng) calls a sipp phone that keys 0; the phone receives the REFER with X-Veratur-Case and the
User-to-User header (and the same in the Refer-To), accepts it and reports 200 in a NOTIFY; the portal hangs up;
the call is queued for the agent console with its case, so the agent who takes it sees the case and transcript."""
from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from case_bridge.escalation import EscalationDesk
from case_bridge.service import CaseService
from foundation.config import Settings
from ivr.call.escalation import decode_uui
from ivr.callback_call import CallbackConversation
from ivr.dialer import Dialer
from testkit import pcaps, sipp
from testkit.db import TEST_TRAMITES, migrated_sqlite
from testkit.outbound import outbound_worker
from testkit.ports import HOST, free_udp_port
from tests.engine.test_callback_call import PHONE, PJSUA_OFFER_TE_PT

pytestmark = [pytest.mark.sip, pytest.mark.timeout(120)]
T0 = datetime(2026, 12, 2, 16, 0, tzinfo=UTC)

# The phone is the called party: its in-dialog NOTIFY goes From its To, To the REFER's From, to the REFER's Contact.
REFER_AND_NOTIFY = """
  <recv request="REFER" timeout="30000">
    <action>
      <ereg regexp="X-Veratur-Case: *@FOLIO@" search_in="msg" check_it="true" assign_to="case"/>
      <ereg regexp="User-to-User: *([0-9a-f]+);encoding=hex;purpose=veratur-case" search_in="msg" check_it="true"
            assign_to="uui,uuihex"/>
      <ereg regexp="Refer-To: *([^[:cntrl:]]+)" search_in="msg" check_it="true" assign_to="rt,referto"/>
      <ereg regexp="[[:space:]]From: *([^[:cntrl:]]+)" search_in="msg" check_it="true" assign_to="f,rfrom"/>
      <ereg regexp="[[:space:]]To: *([^[:cntrl:]]+)" search_in="msg" check_it="true" assign_to="t,rto"/>
      <ereg regexp="Contact: *&lt;([^&gt;]+)&gt;" search_in="msg" check_it="true" assign_to="c,rcontact"/>
      <log message="UUI=[$uuihex]"/>
      <log message="REFER_TO=[$referto]"/>
    </action>
  </recv>
  <Reference variables="case,uui,rt,f,t,c"/>
  <send><![CDATA[
SIP/2.0 202 Accepted
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:phone@[local_ip]:[local_port]>
Content-Length: 0

]]></send>
  <pause milliseconds="300"/>
  <send retrans="500"><![CDATA[
NOTIFY [$rcontact] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: [$rto]
To: [$rfrom]
Call-ID: [call_id]
CSeq: 1 NOTIFY
Contact: <sip:phone@[local_ip]:[local_port]>
Max-Forwards: 70
Event: refer
Subscription-State: terminated;reason=noresource
Content-Type: message/sipfrag;version=2.0
Content-Length: [len]

SIP/2.0 200 OK
]]></send>
  <recv response="200"/>
"""


@pytest.fixture
def service(tmp_path: Path):  # type: ignore[no-untyped-def]
    svc = CaseService.from_url(migrated_sqlite(tmp_path / "d.db"))
    svc.upsert_tramites(TEST_TRAMITES)
    yield svc
    svc.close()


async def test_key_zero_refers_the_citizen_to_the_agents_with_the_case(tmp_path: Path, service: CaseService) -> None:
    phone_port = free_udp_port()
    base = Settings()
    settings = base.model_copy(update={"data_dir": tmp_path, "outbound": base.outbound.model_copy(update={
        "enabled": True, "allowed_prefixes": ["228"], "route": f"sip:{HOST}:{phone_port}"})})
    folio = service.open_case("licencia_conducir", "phone").case.folio
    service.schedule_callback(folio, "2281234567", start=T0, end=T0.replace(hour=18), note="Su cita",
                              requested_by="agente1", reason="agent_callback", allowed_prefixes=["228"],
                              schedule=settings.outbound.callback, now=T0)
    pcap = pcaps.write_dtmf_pcap(tmp_path / "zero.pcap", "0", pt=PJSUA_OFFER_TE_PT)
    keys = f'<nop><action><exec play_pcap_audio="{pcap}"/></action></nop>'
    script = tmp_path / "phone.xml"
    script.write_text(PHONE.replace("@KEYS@", keys + REFER_AND_NOTIFY.replace("@FOLIO@", folio)))
    phone = await sipp.start_async(script, cwd=tmp_path, port=phone_port, timeout_s=60)
    try:
        async with outbound_worker(settings, tmp_path, "cbx/w0") as (edge, tts):
            talk = CallbackConversation(service, tts, settings, first_input_s=10.0, key_timeout_s=4.0)
            dialer = Dialer(service, settings, "w0", edge, talk, capacity=4, active_calls=lambda: 0,
                            clock=lambda: T0)
            [task] = await dialer.run_once()
            assert await asyncio.wait_for(task, 60) == "answered"
            code, text = await phone.wait(30)
            assert code == 0, text
    finally:
        phone.kill()
    uui = decode_uui(phone.logged_value("UUI") + ";encoding=hex;purpose=veratur-case")  # type: ignore[operator]
    assert uui["case"] == folio and uui["why"] == "caller_request"
    refer_to = phone.logged_value("REFER_TO") or ""
    assert refer_to.startswith(f"<{settings.escalation.agent_queue_uri}?") and f"X-Veratur-Case={folio}" in refer_to
    [item] = [i for i in EscalationDesk(service).queue() if i.folio == folio]   # the console pops this case
    assert item.call_id == uui["call"]
    [job] = service.callbacks_for(folio)
    assert job.state == "done"
