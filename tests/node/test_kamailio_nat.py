"""A caller behind NAT at the front door (route[NAT_CALLER] in veratur/kamailio.py: force_rport, received,
fix_nated_contact) with a real Kamailio and a real pjsua2 worker.

The caller (sipp) sends from 127.0.0.1 but its Via and Contact advertise 127.0.0.2:5099, where nothing listens —
what a phone behind a NAT without an ALG does with its private address (a loopback address stands in for the
private one so that nothing can leave the machine if the fix is missing). The answer must come back to the port
it sent from (rport), and the portal's BYE, which the worker sends to the caller's Contact, must reach it too.
Control: the same call with the NAT route taken out of the generated config never gets its 200."""
from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
from pathlib import Path

import pytest

from ivr.sip.edge import EdgeConfig, SipEdge
from ivr.sip.leg import SipLeg
from testkit import sipp
from tests.node.conftest import HOST, run_kamailio, write_settings
from veratur import kamailio

pytestmark = [pytest.mark.sip, pytest.mark.timeout(120)]

ADVERTISED = "127.0.0.2:5099"

CALLER = f"""<?xml version="1.0" encoding="UTF-8" ?>
<scenario name="caller behind NAT: private address in Via and Contact, no rport">
  <send retrans="500"><![CDATA[
INVITE sip:portal@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/UDP {ADVERTISED};branch=[branch]
From: <sip:2281234567@{ADVERTISED}>;tag=[pid]nat
To: <sip:portal@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: <sip:2281234567@{ADVERTISED}>
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]

v=0
o=phone 1 1 IN IP4 {ADVERTISED.split(':')[0]}
s=-
c=IN IP4 [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0
a=rtpmap:0 PCMU/8000
]]></send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rrs="true"/>
  <send><![CDATA[
ACK [next_url] SIP/2.0
Via: SIP/2.0/UDP {ADVERTISED};branch=[branch]
From: <sip:2281234567@{ADVERTISED}>;tag=[pid]nat
To: <sip:portal@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 1 ACK
[routes]
Max-Forwards: 70
Content-Length: 0

]]></send>
  <recv request="BYE" timeout="20000">
    <action><ereg regexp="^BYE (sip:[^ ]*)" search_in="msg" check_it="true" assign_to="bye,ruri"/>
      <log message="BYE_RURI=[$ruri]"/></action>
  </recv>
  <Reference variables="bye"/>
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


async def call_behind_nat(tmp_path: Path) -> tuple[int, str, sipp.SippRun, str]:
    _, settings = write_settings(tmp_path, sip={"workers": 1, "transports": ["udp"]})
    logs = tmp_path / "logs"
    logs.mkdir()
    script = tmp_path / "nat-caller.xml"
    script.write_text(CALLER)
    async with run_kamailio(settings, logs) as k:
        config = dataclasses.replace(EdgeConfig.from_settings(settings, settings.sip.worker_port(0), "nat/w0"),
                                     transports=("udp",), randomize_rtp_port=True,
                                     allowed_peers=(ipaddress.ip_network("127.0.0.0/8"),))
        hangups: set[asyncio.Task[None]] = set()

        async def answer_then_hang_up(leg: SipLeg) -> None:
            await asyncio.sleep(1.5)
            await leg.hangup()                          # the portal ends the call: a BYE to the caller's Contact

        def on_call(leg: SipLeg) -> None:
            task = asyncio.get_running_loop().create_task(answer_then_hang_up(leg))
            hangups.add(task)
            task.add_done_callback(hangups.discard)

        edge = SipEdge(config, on_call=on_call)
        await edge.start()
        try:
            await wait_worker_active(k.paths)
            phone = await sipp.start_async(script, cwd=tmp_path, target=f"{HOST}:{settings.sip.port}", timeout_s=15)
            code, text = await phone.wait(30)
        finally:
            await edge.stop(0)
        return code, text, phone, k.log_text()


async def wait_worker_active(paths: kamailio.KamailioPaths, timeout_s: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        try:
            found = await kamailio.destinations_at(f"unix:{paths.ctl_socket}")
        except kamailio.KamailioError:
            found = []
        if found and found[0].flags.startswith("A"):
            return
        await asyncio.sleep(0.5)
    raise AssertionError("the worker never became active in the dispatcher")


async def test_caller_behind_nat_gets_the_answer_and_the_portals_bye(tmp_path: Path) -> None:
    code, text, phone, log = await call_behind_nat(tmp_path)
    assert code == 0, (text, log[-2000:])
    # the worker's BYE went to the address the INVITE came from, not to the advertised one
    assert phone.logged_value("BYE_RURI") == f"sip:2281234567@{HOST}:{phone.port}"
    assert f"event=nat_caller src={HOST}:{phone.port} proto=udp" in log


async def test_without_the_nat_route_the_same_caller_never_hears_the_answer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the control: the generated config without the NAT handling (everything else the same)
    monkeypatch.setattr(kamailio, "_TEMPLATE", kamailio._TEMPLATE.replace("    route(NAT_CALLER);\n", "", 1))
    code, _, phone, log = await call_behind_nat(tmp_path)
    assert code != 0                       # the 200 went to the advertised port: nobody there
    assert phone.logged_value("BYE_RURI") is None
    assert "event=nat_caller" not in log
